#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.orthoreg` (``--help`` describes it)."""
import sys

from jaxnorm.papers.orthoreg import main

if __name__ == '__main__':
    sys.exit(main())
