#!/usr/bin/env python
"""Thin wrapper: the command is :mod:`jaxnorm.commands.continual` (installed as ``jaxnorm-continual``)."""
import sys

from jaxnorm.commands.continual import main

if __name__ == '__main__':
    sys.exit(main())
