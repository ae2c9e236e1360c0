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


def config_file_defaults(parser: argparse.ArgumentParser, argv, *,
                         extra_keys: tuple[str, ...] = ()) -> dict:
    """Make ``--config FILE``'s ``get_config()`` the defaults of ``parser``'s flags.

    Flags given on the command line still win. A key naming a flag (dashes as underscores)
    becomes that flag's default; keys in ``extra_keys`` (settings with no flag) are returned;
    any other key is an error naming the valid ones. Without ``--config`` nothing changes.
    """
    from jaxnorm import config as config_lib
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config')
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    try:
        values = config_lib.read_config_file(known.config)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    flags = {action.dest for action in parser._actions} - {'help', 'config'}
    unknown = sorted(set(values) - flags - set(extra_keys))
    if unknown:
        parser.error(f'{known.config}: unknown setting(s) {", ".join(unknown)}; valid: '
                     f'{", ".join(sorted(flags | set(extra_keys)))}')
    parser.set_defaults(**{k: v for k, v in values.items() if k in flags})
    return {k: v for k, v in values.items() if k in extra_keys}
