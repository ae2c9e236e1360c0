"""Reproduction report: every paper's experiment, run and judged, in one markdown file.

    python scripts/reproduce.py --quick              # CPU budget, embedded digits data
    python scripts/reproduce.py --quick --only lawn  # one section
    python scripts/reproduce.py --quick --standard lawn:8,emr:5   # two sections at standard
    python scripts/reproduce.py                      # the papers' scale: meant for a GPU/TPU

(``jaxnorm-reproduce`` is the same command, installed with the package.)

Without ``--quick`` every section runs at the papers' scale: its experiment gets ``--scale
paper``, i.e. its module's ``get_config('paper')`` (the ``PAPER`` values there, each naming its
source, which ``scripts/configs/<section>.py`` hands to the other command lines): the paper's
dataset (CIFAR-10/100 through TFDS: prepare them once with ``python -m jaxnorm.data prepare
cifar10``), model, epochs and hyperparameters. The experiments use every device of the host:
their training goes through ``jaxnorm.train.fit`` (the batch sharded over a ``data`` mesh) or spreads its vmapped
seeds over the devices.

``--standard NAME:SEEDS,...`` runs the named sections at the standard scale instead (longer
CPU runs on the offline datasets, sized from a pilot: ``get_config('standard')``) with their own
seed count (``NAME`` alone takes ``--seeds``); the others keep the scale chosen above.

Each section runs its experiment, ``python -m jaxnorm.papers.<section>`` (what
``scripts/experiments/<section>.py`` runs), in a subprocess and reads the ``results.json`` it
writes (validated against the schema of :mod:`jaxnorm.papers.checks`).
That file carries the paper, the claim, what was run (``ran``), the scale and seeds, a
markdown ``table`` (mean +- std over seeds), ``figures`` and ``checks``: each declared before
the run as claim or sanity, with its test, margin, powered effect, interval over seeds and
outcome (supported / refuted / inconclusive). The verdict follows from the claim checks only
(``jaxnorm.papers.checks.verdict``, its rule written into the report); a sanity check that is
not supported makes the section invalid. Below a section's checks, a sizing table takes the
run as a pilot: for each paired claim check, the effect its seeds can detect and the seeds a
larger scale needs for the effect it is declared for (:mod:`jaxnorm.papers.sizing`).

Finished sections are cached under ``OUT/cache/<section>-<hash>`` (:func:`cache_key`). The
hash covers the section's arguments and the source of its experiment module (which holds its
settings at every scale) and of every repository module that module imports, directly or through
others (:func:`section_sources`), so a change to code a section runs reruns it, and an
unchanged rerun, or a change elsewhere, skips it. A section is written to a temporary folder
and renamed when it has finished, so an interrupted run leaves no half-written cache entry.
Deleting ``OUT/cache`` and rerunning recomputes every number (the experiments are seeded).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import modulefinder
import os
import platform
import shutil
import subprocess
import sys
import time

from tqdm.auto import tqdm

from jaxnorm.cli import check_input_dir, check_output_dir, show_defaults
from jaxnorm.papers import checks as checks_lib, sizing

# The checkout (jaxnorm/papers/reproduce.py -> the folder holding jaxnorm/ and scripts/): the
# sections' modules are found and hashed there; and the package that holds them.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = 'jaxnorm.papers'
VERDICT_RULE = checks_lib.VERDICT_RULE
QUICK_NOTE = ('**Quick scale: not powered.** Every section below at the quick (CPU '
              'demonstration) scale ran on small data with few seeds; its checks are declared and '
              'judged by the rule above, but none is sized to detect the effect the paper '
              'reports, so an inconclusive outcome there says nothing about the paper.')
SCALE_NAMES = {'quick': 'quick (CPU)', 'standard': 'standard (CPU, sized from a pilot)',
               'paper': "the papers'"}


@dataclasses.dataclass(frozen=True)
class Section:
    """One paper: its experiment module (``jaxnorm.papers.<name>``) and its title."""
    name: str
    title: str

    @property
    def module(self) -> str:
        return f'{PACKAGE}.{self.name}'


SECTIONS = (
    Section('lawn', 'LAWN: Logit Attenuating Weight Normalization (arXiv:2108.05839)'),
    Section('flow_pruning', 'A Gradient Flow Framework for Analyzing Network Pruning '
            '(arXiv:2009.11839)'),
    Section('beyond_bn', 'Beyond BatchNorm: Towards a Unified Understanding of Normalization '
            'in Deep Learning (arXiv:2106.05956)'),
    Section('emr', 'How do Quadratic Regularizers Prevent Catastrophic Forgetting: The Role '
            'of Interpolation (EMR, arXiv:2102.02805)'),
    Section('unification', 'Efficient Micro-Structured Weight Unification and Pruning for '
            'Neural Network Compression (arXiv:2106.08301)'),
    Section('lottery', 'Lottery Ticket Preserves Weight Correlation: Is It Desirable or Not? '
            '(arXiv:2102.11068)'),
    Section('afan', 'A-FAN: Adversarial Feature Augmentation and Normalization for Visual '
            'Recognition (arXiv:2103.12171)'),
    Section('orthoreg', 'OrthoReg: Robust Network Pruning Using Orthonormality Regularization '
            '(arXiv:2009.05014)'),
    Section('eman', 'Exponential Moving Average Normalization for Self-supervised and '
            'Semi-supervised Learning (arXiv:2101.08482)'),
    Section('mimicnorm', 'MimicNorm: Weight Mean and Last BN Layer Mimic the Dynamic of Batch '
            'Normalization (arXiv:2010.09278)'),
)


def select_sections(only: str | None) -> list[Section]:
    """The sections named in ``--only`` (comma separated), or all of them."""
    if not only:
        return list(SECTIONS)
    by_name = {section.name: section for section in SECTIONS}
    unknown = [name for name in only.split(',') if name not in by_name]
    if unknown:
        raise ValueError(f'unknown section(s) {unknown}; choose from {sorted(by_name)}')
    return [by_name[name] for name in only.split(',')]


def section_sources(module: str) -> list[str]:
    """Files of ``module`` and of every repository module it imports, directly or not.

    :class:`modulefinder.ModuleFinder` searches the repository only: it reads each module's
    bytecode, so imports inside functions count too (code a section imports lazily still runs),
    and follows them transitively, packages' ``__init__`` included. Third-party and standard
    library modules lie outside its search path: they are neither followed nor hashed.

    The engine's extension registry imports its built-in extensions by name
    (:data:`jaxnorm.extension.BUILTIN_MODULES`, through :mod:`importlib`, which no bytecode
    shows): a section that reaches the registry runs them all, so they count as its imports.
    """
    finder = modulefinder.ModuleFinder(path=[REPO])
    finder.import_hook(module)
    if 'jaxnorm.extension' in finder.modules:
        from jaxnorm.extension import BUILTIN_MODULES
        for name in BUILTIN_MODULES:
            finder.import_hook(name)
    return sorted(m.__file__ for m in finder.modules.values() if m.__file__)


def cache_key(section: Section, arguments: list[str]) -> str:
    """The name of a section's cache entry: ``<name>-<hash>``.

    The hash covers the section's arguments (paths relative to the repository) and the source
    of every module :func:`section_sources` finds (the experiment module holds the settings).
    An edit to any of them, however indirectly imported, changes the key, so the section
    reruns; an edit to a module it never imports does not.
    """
    relative = [os.path.relpath(a, REPO) if os.path.isabs(a) else a for a in arguments]
    digest = hashlib.sha256(json.dumps({'section': section.name, 'arguments': relative},
                                       sort_keys=True).encode())
    for path in section_sources(section.module):
        digest.update(os.path.relpath(path, REPO).encode())
        with open(path, 'rb') as f:
            digest.update(f.read())
    return f'{section.name}-{digest.hexdigest()[:16]}'


def parse_standard(text: str | None, default_seeds: int) -> dict[str, int]:
    """``'lawn:8,emr'`` -> ``{'lawn': 8, 'emr': default_seeds}`` (ValueError naming the
    sections and the form when a name is unknown or a seed count is not an integer >= 3)."""
    if not text:
        return {}
    known = {section.name for section in SECTIONS}
    seeds = {}
    for item in text.split(','):
        name, _, count = item.partition(':')
        if name not in known:
            raise ValueError(f'--standard: unknown section {name!r}; choose from {sorted(known)}')
        if count and not (count.isdigit() and int(count) >= 3):
            raise ValueError(f'--standard: {item!r} needs a seed count >= 3, as in {name}:8')
        seeds[name] = int(count) if count else default_seeds
    return seeds


def section_arguments(args: argparse.Namespace, section: Section) -> list[str]:
    """Command-line arguments passed to the section's experiment script: the standard scale
    and its seeds for a section named in ``--standard``, else ``--quick``'s or the paper's."""
    if section.name in args.standard:
        scale, seeds = 'standard', args.standard[section.name]
    else:
        scale, seeds = ('quick' if args.quick else 'paper'), args.seeds
    extra = ['--scale', scale, '--seeds', str(seeds)]
    if args.data_dir:
        extra += ['--data-dir', args.data_dir]
    return extra


def cached_section(section: Section, folder: str) -> tuple | None:
    """(results, folder holding results.json) of the finished run cached in ``folder``, or None."""
    if not os.path.exists(os.path.join(folder, section.name, 'results.json')):
        return None
    try:
        return load_results(folder, section), os.path.join(folder, section.name)
    except checks_lib.ResultsSchemaError:  # written under an older contract: run it again
        return None


def run_section(section: Section, arguments: list[str], folder: str) -> tuple[dict, str, bool]:
    """Runs (or reuses) one section cached in ``folder``; returns (results, folder holding
    results.json, cached)."""
    cached = cached_section(section, folder)
    if cached:
        return (*cached, True)
    partial = folder + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    log_path = os.path.join(partial, 'log.txt')
    command = [sys.executable, '-m', section.module, *arguments, '--out', partial]
    with open(log_path, 'w') as log:
        # The experiment's own tqdm bars go to stderr, shown live; its printout to the log.
        finished = subprocess.run(command, cwd=REPO, stdout=log, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"section {section.name!r} failed (exit {finished.returncode}); "
                           f"its output is in {log_path}")
    results = load_results(partial, section)  # a schema error leaves no cache entry
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return results, os.path.join(folder, section.name), False


def load_results(folder: str, section: Section) -> dict:
    """The section's ``results.json``, schema-validated (ValueError naming the field)."""
    return checks_lib.read_results(os.path.join(folder, section.name, 'results.json'))


def verdict(checks: list[dict]) -> str:
    """The report's rule (``VERDICT_RULE``) applied to a section's evaluated checks."""
    return checks_lib.verdict(checks)


def verdict_label(results: dict) -> str:
    """The verdict, marked "quick: not powered" at the quick scale; invalid in red."""
    label = results['verdict']
    if label == 'invalid':
        label = '<span style="color:red">invalid</span>'
    return f'{label} (quick: not powered)' if results['scale'] == 'quick' else label


def claim_counts(checks: list[dict]) -> str:
    """``'2 supported, 1 refuted, 0 inconclusive of 3 claims; sanity 2 / 2'``."""
    claims = [c['outcome'] for c in checks if c['kind'] == 'claim']
    sanity = [c['outcome'] for c in checks if c['kind'] == 'sanity']
    return (f"{claims.count('supported')} supported, {claims.count('refuted')} refuted, "
            f"{claims.count('inconclusive')} inconclusive of {len(claims)} claims; sanity "
            f"{sanity.count('supported')} / {len(sanity)} hold")


def effect_text(check: dict) -> str:
    """The estimate with its interval (or the rule's value), for the report's check table."""
    if check['estimate'] is None:
        return '–'
    if check['low'] is None:
        return f"{check['estimate']:.4g}"
    flat = ''
    if check.get('zero_spread'):
        points = ([check['point_outcome']] if 'point_outcome' in check else
                  [f"{c['cell']}: {c['point_outcome']}" for c in check['cells']
                   if c['zero_spread']])
        flat = f"; zero spread, no noise estimate; as a point: {', '.join(points)}"
    return (f"{check['estimate']:.3g} [{check['low']:.3g}, {check['high']:.3g}] "
            f"(n = {check['n']}{flat})")


def section_markdown(section: Section, results: dict, figure_dir: str, seconds: float,
                     cached: bool) -> list[str]:
    checks = results['checks']
    lines = [f'## {section.title}', '',
             f"**Claim.** {results['claim']}", '',
             f"**Ran.** {results.get('ran') or json.dumps(results.get('setup', {}))}", '',
             f"**Scale:** {results['scale']}; **seeds:** {results['seeds']}.", '',
             f"**Verdict: {verdict_label(results)}** ({claim_counts(checks)}; "
             f"{seconds:.0f} s{', cached' if cached else ''}).", '',
             *results['table'], '',
             '| check | kind | claim | statistic | rule | effect [interval] | outcome |',
             '|---|---|---|---|---|---|---|',
             *[f"| {cell(c['name'])} | {c['kind']} | {cell(c['claim'])} | "
               f"{cell(c['statistic'])} | {cell(c['rule'])} | {cell(effect_text(c))} | "
               f"**{c['outcome']}** |" for c in checks], '',
             *sizing.sizing_table(results)]
    notes = results.get('notes')
    if notes:
        lines += ['**Notes.**', '', *[f'- {note}' for note in notes], '']
    lines += [f'![{name}]({os.path.join(figure_dir, name)})' for name in results['figures']]
    return lines + ['']


def cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (a bare ``|`` would split it)."""
    return str(text).replace('|', '\\|')


def machine_description() -> str:
    import jax  # imported late: the sections run in subprocesses and do not need it here
    devices = jax.devices()
    return (f'{platform.platform()}, Python {platform.python_version()}, jax {jax.__version__}, '
            f'{len(devices)} x {devices[0].device_kind} ({os.cpu_count()} CPU cores)')


def scales_line(rows: list[tuple[Section, dict, str, float, bool]]) -> str:
    """``'Quick (CPU) scale'`` when every section shares one scale, else each scale with its
    sections: ``'Scales: quick (CPU): a, b; standard (CPU, sized from a pilot): c'``."""
    by_scale: dict[str, list[str]] = {}
    for section, results, *_ in rows:
        by_scale.setdefault(results['scale'], []).append(section.name)
    if len(by_scale) == 1:
        name = SCALE_NAMES[next(iter(by_scale))]
        return f'{name[0].upper()}{name[1:]} scale'
    return 'Scales: ' + '; '.join(f"{SCALE_NAMES[scale]}: {', '.join(names)}"
                                  for scale, names in by_scale.items())


def write_report(out: str, rows: list[tuple[Section, dict, str, float, bool]]):
    figures_root = os.path.join(out, 'figures')
    summary = ['| paper | scale | seeds | verdict | checks | seconds |',
               '|---|---|---|---|---|---|']
    body = []
    for section, results, folder, seconds, cached in rows:
        target = os.path.join(figures_root, section.name)
        shutil.rmtree(target, ignore_errors=True)  # a figure the section no longer draws goes
        os.makedirs(target)
        for name in results['figures']:
            shutil.copy2(os.path.join(folder, name), os.path.join(target, name))
        checks = results['checks']
        summary.append(f'| [{section.title}](#{anchor(section.title)}) | {results["scale"]} | '
                       f'{results["seeds"]} | {verdict_label(results)} | '
                       f'{claim_counts(checks)} | {seconds:.0f} |')
        body += section_markdown(section, results, os.path.join('figures', section.name),
                                 seconds, cached)
    header = ['# jaxnorm reproduction report', '',
              f"{scales_line(rows)}, written "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
              f'{machine_description()}.', '', VERDICT_RULE, '',
              *([QUICK_NOTE, ''] if any(r[1]['scale'] == 'quick' for r in rows) else []),
              *summary, '']
    with open(os.path.join(out, 'REPORT.md'), 'w') as f:
        f.write('\n'.join(header + body))


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = ''.join(ch for ch in title.lower() if ch.isalnum() or ch in ' -')
    return kept.replace(' ', '-')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='CPU-sized runs of every section')
    parser.add_argument('--only', help=f"comma-separated sections: "
                                       f"{', '.join(s.name for s in SECTIONS)}")
    parser.add_argument('--seeds', type=int, default=3, help='seeds per statistical claim')
    parser.add_argument('--standard', metavar='NAME:SEEDS,...',
                        help='sections run at the standard scale, each with its seed count')
    parser.add_argument('--out', default='report', help='writes OUT/REPORT.md and OUT/cache')
    parser.add_argument('--data-dir', help='TFDS data dir (digits is prepared there if absent)')
    show_defaults(parser)
    args = parser.parse_args(argv)
    try:
        sections = select_sections(args.only)
        check_output_dir(args.out, '--out')
        check_input_dir(args.data_dir, '--data-dir')
        args.standard = parse_standard(args.standard, args.seeds)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.seeds < 3:
        parser.error('--seeds must be >= 3: the statistical claims are judged on mean +- std')
    cache_dir = os.path.join(args.out, 'cache')
    arguments = {s.name: section_arguments(args, s) for s in SECTIONS}
    # One hash per section, of the code as it is before anything runs.
    folders = {s.name: os.path.join(cache_dir, cache_key(s, arguments[s.name])) for s in SECTIONS}
    finished, failures = {}, []
    for section in tqdm(sections, desc='reproduce', unit='section'):
        started = time.perf_counter()
        try:
            results, folder, cached = run_section(section, arguments[section.name],
                                                  folders[section.name])
        except (RuntimeError, ValueError) as error:  # ResultsSchemaError is a ValueError
            failures.append(str(error))
            continue
        seconds = results.get('seconds', time.perf_counter() - started)
        finished[section.name] = (section, results, folder, seconds, cached)
    # Sections not run now still appear when a finished run of the same config is cached.
    rows = []
    for section in SECTIONS:
        if section.name not in finished and (hit := cached_section(section,
                                                                   folders[section.name])):
            results, folder = hit
            finished[section.name] = (section, results, folder, results.get('seconds', 0.0), True)
        if section.name in finished:
            rows.append(finished[section.name])
    if rows:
        write_report(args.out, rows)
        print(f"report: {os.path.join(args.out, 'REPORT.md')}")
        for section, results, *_ in rows:
            print(f"  {section.name}: {verdict_label(results)}")
    for failure in failures:
        print(f'error: {failure}', file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
