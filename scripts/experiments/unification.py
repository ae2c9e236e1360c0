#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.unification` (``--help`` describes it)."""
import sys

from jaxnorm.papers.unification import main

if __name__ == '__main__':
    sys.exit(main())
