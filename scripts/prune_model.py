#!/usr/bin/env python
"""Thin wrapper: the command is :mod:`jaxnorm.commands.prune` (installed as ``jaxnorm-prune``).

Not named ``prune.py``: Python puts this file's folder first on the import path, where a
``prune.py`` would shadow the ``prune`` package that jaxnorm imports.
"""
import sys

from jaxnorm.commands.prune import main

if __name__ == '__main__':
    sys.exit(main())
