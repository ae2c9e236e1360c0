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
Each section the report shows also leaves a small record, ``OUT/records/<section>`` (its
manifest, results and figures; committed with the report).

``--reuse NAME,...`` knowingly keeps a named section's last finished run of the same arguments
when its code has changed since (a long standard section whose numbers a change elsewhere
cannot move): the report marks it "reused" and lists every source file it imports that changed
since that run (from the entry's manifest, :mod:`jaxnorm.papers.report_cache`), so a reader can
judge. ``--reuse`` also finds the committed records, so it works on a fresh checkout without
the cache. Without ``--reuse`` a changed section always reruns.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import modulefinder
import os
import shutil
import subprocess
import sys
import time

from tqdm.auto import tqdm

from jaxnorm.cli import check_input_dir, check_output_dir, show_defaults
from jaxnorm.papers import checks as checks_lib, report_cache
from jaxnorm.papers.report_markdown import Row, verdict_label, write_report

# The checkout (jaxnorm/papers/reproduce.py -> the folder holding jaxnorm/ and scripts/): the
# sections' modules are found and hashed there; and the package that holds them.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = 'jaxnorm.papers'
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
    Section('eman_selfsup', 'EMAN, the self-supervised half: BYOL-EMAN against BYOL with a '
            'plain EMA target (arXiv:2101.08482)'),
    Section('mimicnorm', 'MimicNorm: Weight Mean and Last BN Layer Mimic the Dynamic of Batch '
            'Normalization (arXiv:2010.09278)'),
)


def select_sections(only: str | None, option: str = '--only') -> list[Section]:
    """The sections named in ``only`` (comma separated), or all of them (ValueError naming
    ``option`` and the choices for an unknown name)."""
    if not only:
        return list(SECTIONS)
    by_name = {section.name: section for section in SECTIONS}
    unknown = [name for name in only.split(',') if name not in by_name]
    if unknown:
        raise ValueError(f'{option}: unknown section(s) {unknown}; choose from {sorted(by_name)}')
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


def cache_key(section: Section, arguments: list[str], sources: list[str] | None = None) -> str:
    """The name of a section's cache entry: ``<name>-<hash>``.

    The hash covers the section's arguments (paths relative to the repository) and the source
    of every module :func:`section_sources` finds (the experiment module holds the settings).
    An edit to any of them, however indirectly imported, changes the key, so the section
    reruns; an edit to a module it never imports does not. ``sources``: the section's
    :func:`section_sources`, when already found.
    """
    digest = hashlib.sha256(json.dumps({'section': section.name,
                                        'arguments': relative_arguments(arguments)},
                                       sort_keys=True).encode())
    for path in sources if sources is not None else section_sources(section.module):
        digest.update(os.path.relpath(path, REPO).encode())
        with open(path, 'rb') as f:
            digest.update(f.read())
    return f'{section.name}-{digest.hexdigest()[:16]}'


def relative_arguments(arguments: list[str]) -> list[str]:
    """``arguments`` with absolute paths made relative to the repository (the cache does not
    depend on where the checkout lies)."""
    return [os.path.relpath(a, REPO) if os.path.isabs(a) else a for a in arguments]


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


def run_section(section: Section, arguments: list[str], folder: str,
                digests: dict[str, str]) -> tuple[dict, str, bool]:
    """Runs (or reuses) one section cached in ``folder``; returns (results, folder holding
    results.json, cached). A finished run leaves its manifest (``digests``: its sources'
    :func:`report_cache.source_digests`) beside its results."""
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
    report_cache.write_manifest(partial, relative_arguments(arguments), digests,
                                report_cache.commit(REPO))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return results, os.path.join(folder, section.name), False


def load_results(folder: str, section: Section) -> dict:
    """The section's ``results.json``, schema-validated (ValueError naming the field)."""
    return checks_lib.read_results(os.path.join(folder, section.name, 'results.json'))


def verdict(checks: list[dict]) -> str:
    """The report's rule (``VERDICT_RULE``) applied to a section's evaluated checks."""
    return checks_lib.verdict(checks)


def reused_row(section: Section, cache_dir: str, arguments: list[str],
               digests: dict[str, str]) -> Row | None:
    """The section's last finished run with the same ``arguments`` on any code, as a reused
    :class:`Row` naming the sources that changed since (None when no entry has a manifest)."""
    records = os.path.join(os.path.dirname(cache_dir), 'records')
    entry = report_cache.latest_entry([cache_dir, records], section.name,
                                      relative_arguments(arguments))
    if entry is None:
        return None
    folder, manifest = entry
    hit = cached_section(section, folder)
    if hit is None:
        return None
    results, results_folder = hit
    changed = report_cache.changed_sources(manifest['sources'], digests)
    return Row(section, results, results_folder, results.get('seconds', 0.0), True,
               reused={**manifest, 'changed': changed} if changed else None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='CPU-sized runs of every section')
    parser.add_argument('--only', help=f"comma-separated sections: "
                                       f"{', '.join(s.name for s in SECTIONS)}")
    parser.add_argument('--seeds', type=int, default=3, help='seeds per statistical claim')
    parser.add_argument('--standard', metavar='NAME:SEEDS,...',
                        help='sections run at the standard scale, each with its seed count')
    parser.add_argument('--reuse', metavar='NAME,...',
                        help="sections whose last finished run of the same arguments is kept "
                             "even if their code changed since (the report lists the changes)")
    parser.add_argument('--out', default='report', help='writes OUT/REPORT.md and OUT/cache')
    parser.add_argument('--data-dir', help='TFDS data dir (digits is prepared there if absent)')
    show_defaults(parser)
    args = parser.parse_args(argv)
    try:
        sections = select_sections(args.only)
        reuse = ({s.name for s in select_sections(args.reuse, '--reuse')} if args.reuse
                 else set())
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
    sources = {s.name: section_sources(s.module) for s in SECTIONS}
    digests = {name: report_cache.source_digests(paths, REPO) for name, paths in sources.items()}
    folders = {s.name: os.path.join(cache_dir, cache_key(s, arguments[s.name], sources[s.name]))
               for s in SECTIONS}

    def kept(section: Section) -> Row | None:
        """The section's exact cache hit, else (when named in ``--reuse``) its last run."""
        if hit := cached_section(section, folders[section.name]):
            results, folder = hit
            return Row(section, results, folder, results.get('seconds', 0.0), True)
        if section.name in reuse:
            return reused_row(section, cache_dir, arguments[section.name], digests[section.name])
        return None

    finished, failures = {}, []
    for section in tqdm(sections, desc='reproduce', unit='section'):
        if row := kept(section):
            finished[section.name] = row
            continue
        if section.name in reuse:
            print(f'--reuse: no finished run of {section.name} with these arguments: running it',
                  file=sys.stderr)
        started = time.perf_counter()
        try:
            results, folder, cached = run_section(section, arguments[section.name],
                                                  folders[section.name], digests[section.name])
        except (RuntimeError, ValueError) as error:  # ResultsSchemaError is a ValueError
            failures.append(str(error))
            continue
        seconds = results.get('seconds', time.perf_counter() - started)
        finished[section.name] = Row(section, results, folder, seconds, cached)
    # Sections not run now still appear when a finished run of the same config is cached.
    rows = [row for section in SECTIONS
            if (row := finished.get(section.name) or kept(section)) is not None]
    if rows:
        write_report(args.out, rows)
        for row in rows:
            report_cache.save_record(os.path.dirname(row.folder), row.section.name,
                                     os.path.join(args.out, 'records', row.section.name))
        print(f"report: {os.path.join(args.out, 'REPORT.md')}")
        for row in rows:
            print(f"  {row.section.name}: {verdict_label(row.results)}"
                  f"{' (reused)' if row.reused else ''}")
    for failure in failures:
        print(f'error: {failure}', file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
