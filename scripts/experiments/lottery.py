#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.lottery` (``--help`` describes it)."""
import sys

from jaxnorm.papers.lottery import main

if __name__ == '__main__':
    sys.exit(main())
