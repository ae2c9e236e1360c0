#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.afan` (``--help`` describes it)."""
import sys

from jaxnorm.papers.afan import main

if __name__ == '__main__':
    sys.exit(main())
