#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.beyond_bn` (``--help`` describes it)."""
import sys

from jaxnorm.papers.beyond_bn import main

if __name__ == '__main__':
    sys.exit(main())
