#!/usr/bin/env python
"""Thin wrapper: the report is :mod:`jaxnorm.papers.reproduce` (installed as
``jaxnorm-reproduce``)."""
import sys

from jaxnorm.papers.reproduce import main

if __name__ == '__main__':
    sys.exit(main())
