#!/usr/bin/env python
"""Thin wrapper: the command is :mod:`jaxnorm.commands.train` (installed as ``jaxnorm-train``)."""
import sys

from jaxnorm.commands.train import main

if __name__ == '__main__':
    sys.exit(main())
