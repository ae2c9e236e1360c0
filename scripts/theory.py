#!/usr/bin/env python
"""Thin wrapper: the command is :mod:`jaxnorm.commands.theory` (installed as ``jaxnorm-theory``)."""
import sys

from jaxnorm.commands.theory import main

if __name__ == '__main__':
    sys.exit(main())
