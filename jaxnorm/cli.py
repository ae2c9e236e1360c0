"""Helpers shared by the command-line scripts in ``scripts/``."""
from __future__ import annotations

import argparse
import ast


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of the whole usage text."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def parse_option(text: str) -> tuple[str, object]:
    """Parse ``KEY=VALUE`` with a Python-literal value (falling back to the raw string)."""
    if '=' not in text:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    key, raw = text.split('=', 1)
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw
