"""Helpers shared by the command-line scripts in ``scripts/``."""
from __future__ import annotations

import argparse
import ast
import os


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
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config')
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    try:
        values = config_flag_values(parser, known.config, extra_keys=extra_keys)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    flags = _flag_names(parser)
    parser.set_defaults(**{k: v for k, v in values.items() if k in flags})
    return {k: v for k, v in values.items() if k in extra_keys}


def config_flag_values(parser: argparse.ArgumentParser, path: str, *,
                       extra_keys: tuple[str, ...] = ()) -> dict:
    """``get_config()`` of config file ``path``, checked against ``parser``'s flags.

    Every key must name a flag of ``parser`` (dashes as underscores) or be one of
    ``extra_keys``. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming
    the valid keys for any other key, so a library caller gets exceptions, not an exit.
    """
    from jaxnorm import config as config_lib
    values = config_lib.read_config_file(path)
    flags = _flag_names(parser)
    unknown = sorted(set(values) - flags - set(extra_keys))
    if unknown:
        raise ValueError(f'{path}: unknown setting(s) {", ".join(unknown)}; valid: '
                         f'{", ".join(sorted(flags | set(extra_keys)))}')
    return values


def _flag_names(parser: argparse.ArgumentParser) -> set[str]:
    """Destinations of ``parser``'s flags a config file may set (not ``help``, ``config``)."""
    return {action.dest for action in parser._actions} - {'help', 'config'}


class UsageError(ValueError):
    """A command-line value that cannot work; the message names the flag and the value."""


def check_output_dir(path: str | None, flag: str) -> None:
    """Raise :class:`UsageError` unless ``path`` is, or can be created as, a writable folder
    (None: the command picks one)."""
    if path is None:
        return
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f'{flag} {path!r} is a file, not a folder; choose a folder')
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f'{flag} {path!r} is not writable; choose another folder')
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f'{flag} {path!r} cannot be created: {parent!r} is a file')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f'{flag} {path!r} cannot be created: {parent!r} is not writable')


def check_output_file(path: str | None, flag: str) -> None:
    """Raise :class:`UsageError` unless ``path`` can be written as a file."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f'{flag} {path!r} is a folder; give a file name')
    check_output_dir(os.path.dirname(os.path.abspath(path)), f'the folder of {flag}')


def check_input_dir(path: str | None, flag: str) -> None:
    """Raise :class:`UsageError` when ``path`` exists but is not a folder."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f'{flag} {path!r} is a file, not a folder')


def check_distributed(coordinator_address: str | None, num_processes: int | None,
                      process_id: int | None) -> None:
    """Raise :class:`UsageError` unless the multi-process flags are complete and well formed:
    all three or none; HOST:PORT with a port in 1-65535; 0 <= process id < process count."""
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if not any(given):
        return
    if not all(given):
        raise UsageError('a multi-process run needs --coordinator-address HOST:PORT, '
                         '--num-processes and --process-id together (or --distributed, where '
                         'JAX finds the cluster itself)')
    host, _, port = coordinator_address.rpartition(':')
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f'--coordinator-address {coordinator_address!r} must be HOST:PORT '
                         'with a port in 1-65535, e.g. 10.0.0.1:1234')
    if num_processes < 1:
        raise UsageError(f'--num-processes must be >= 1, got {num_processes}')
    if not 0 <= process_id < num_processes:
        raise UsageError(f'--process-id must be in [0, {num_processes}), got {process_id}')


def show_defaults(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """Append ``(default: X)`` to every option's help, X from ``defaults[dest]`` when given
    (e.g. a config's defaults behind flags whose argparse default is None) or the flag's own
    default; flags without a default, switches and subcommands are left as they are."""
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or action.nargs == 0 or not action.option_strings:
            continue
        value = (defaults or {}).get(action.dest, action.default)
        text = action.help or ''
        if value is not None and value != [] and 'default' not in text.lower():
            shown = ' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value
            action.help = f'{text} (default: {shown})'.replace('%', '%%').strip()
