#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.mimicnorm` (``--help`` describes it)."""
import sys

from jaxnorm.papers.mimicnorm import main

if __name__ == '__main__':
    sys.exit(main())
