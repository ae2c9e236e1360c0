#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.eman_selfsup` (``--help`` describes it)."""
import sys

from jaxnorm.papers.eman_selfsup import main

if __name__ == '__main__':
    sys.exit(main())
