#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.emr` (``--help`` describes it)."""
import sys

from jaxnorm.papers.emr import main

if __name__ == '__main__':
    sys.exit(main())
