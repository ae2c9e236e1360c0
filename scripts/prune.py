#!/usr/bin/env python
"""Thin wrapper: the command is :mod:`jaxnorm.commands.prune` (installed as ``jaxnorm-prune``)."""
import os
import sys

# Python puts this file's folder first on the import path, where this file would shadow the
# ``prune`` package that jaxnorm imports; the installed ``jaxnorm-prune`` needs no such line.
sys.path.remove(os.path.dirname(os.path.abspath(__file__)))

from jaxnorm.commands.prune import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
