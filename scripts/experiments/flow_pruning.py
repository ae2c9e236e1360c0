#!/usr/bin/env python
"""Thin wrapper: the experiment is :mod:`jaxnorm.papers.flow_pruning` (``--help`` describes it)."""
import sys

from jaxnorm.papers.flow_pruning import main

if __name__ == '__main__':
    sys.exit(main())
