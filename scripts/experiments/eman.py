#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.eman` (``--help`` describes it)."""
import sys

from jaxnorm.papers.eman import main

if __name__ == '__main__':
    sys.exit(main())
