#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.lawn` (``--help`` describes it)."""
import sys

from jaxnorm.papers.lawn import main

if __name__ == '__main__':
    sys.exit(main())
