"""The reproduction report's markdown: the summary table, one section per paper (claim, what
ran, verdict, the table of checks with their intervals, the sizing table, notes, figures), and
the header naming each scale. :mod:`jaxnorm.papers.reproduce` runs the sections; this module
only writes what they returned.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
from typing import TYPE_CHECKING

from jaxnorm.papers import checks as checks_lib, sizing

if TYPE_CHECKING:
    from jaxnorm.papers.reproduce import Section

VERDICT_RULE = checks_lib.VERDICT_RULE
QUICK_NOTE = ('**Quick scale: not powered.** Every section below at the quick (CPU '
              'demonstration) scale ran on small data with few seeds; its checks are declared and '
              'judged by the rule above, but none is sized to detect the effect the paper '
              'reports, so an inconclusive outcome there says nothing about the paper.')
REUSED_NOTE = ('**Reused sections.** A section marked "reused" was not rerun on this code: '
               '`--reuse` kept its last run of the same scale and seeds, and the section lists '
               'the source files it imports that have changed since.')
SCALE_NAMES = {'quick': 'quick (CPU)', 'standard': 'standard (CPU, sized from a pilot)',
               'paper': "the papers'"}



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


@dataclasses.dataclass(frozen=True)
class Row:
    """One finished section of the report: its results, the folder holding them, its run
    time, whether it came from the cache, and, when ``--reuse`` kept a run of earlier code,
    that run's manifest with ``changed``, the sources that differ now."""
    section: Section
    results: dict
    folder: str
    seconds: float
    cached: bool
    reused: dict | None = None

    @property
    def timing(self) -> str:
        """``'1049 s'``, marked cached or reused."""
        mark = ', reused' if self.reused else ', cached' if self.cached else ''
        return f'{self.seconds:.0f} s{mark}'


def reuse_note(reused: dict) -> list[str]:
    """The paragraph a reused section carries: when and on which commit it ran, and the
    source files it imports that have changed since."""
    changed = reused['changed']
    listed = ', '.join(f'`{path}`' for path in changed) if changed else 'none'
    return [f"**Reused from earlier code** (`--reuse`): this section ran on commit "
            f"`{reused.get('commit') or 'unknown'}`, finished {reused['finished']}. Source "
            f"files it imports that changed since ({len(changed)}): {listed}.", '']


def section_markdown(row: Row, figure_dir: str) -> list[str]:
    section, results = row.section, row.results
    checks = results['checks']
    lines = [f'## {section.title}', '',
             f"**Claim.** {results['claim']}", '',
             f"**Ran.** {results.get('ran') or json.dumps(results.get('setup', {}))}", '',
             f"**Scale:** {results['scale']}; **seeds:** {results['seeds']}.", '',
             f"**Verdict: {verdict_label(results)}** ({claim_counts(checks)}; "
             f"{row.timing}).", '',
             *(reuse_note(row.reused) if row.reused else []),
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


def scales_line(rows: list[Row]) -> str:
    """``'Quick (CPU) scale'`` when every section shares one scale, else each scale with its
    sections: ``'Scales: quick (CPU): a, b; standard (CPU, sized from a pilot): c'``."""
    by_scale: dict[str, list[str]] = {}
    for row in rows:
        by_scale.setdefault(row.results['scale'], []).append(row.section.name)
    if len(by_scale) == 1:
        name = SCALE_NAMES[next(iter(by_scale))]
        return f'{name[0].upper()}{name[1:]} scale'
    return 'Scales: ' + '; '.join(f"{SCALE_NAMES[scale]}: {', '.join(names)}"
                                  for scale, names in by_scale.items())


def write_report(out: str, rows: list[Row]):
    figures_root = os.path.join(out, 'figures')
    summary = ['| paper | scale | seeds | verdict | checks | time |',
               '|---|---|---|---|---|---|']
    body = []
    for row in rows:
        section, results = row.section, row.results
        target = os.path.join(figures_root, section.name)
        shutil.rmtree(target, ignore_errors=True)  # a figure the section no longer draws goes
        os.makedirs(target)
        for name in results['figures']:
            shutil.copy2(os.path.join(row.folder, name), os.path.join(target, name))
        checks = results['checks']
        summary.append(f'| [{section.title}](#{anchor(section.title)}) | {results["scale"]} | '
                       f'{results["seeds"]} | {verdict_label(results)} | '
                       f'{claim_counts(checks)} | {row.timing} |')
        body += section_markdown(row, os.path.join('figures', section.name))
    header = ['# jaxnorm reproduction report', '',
              f"{scales_line(rows)}, written "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
              f'{machine_description()}.', '', VERDICT_RULE, '',
              *([QUICK_NOTE, ''] if any(r.results['scale'] == 'quick' for r in rows) else []),
              *([REUSED_NOTE, ''] if any(r.reused for r in rows) else []),
              *summary, '']
    with open(os.path.join(out, 'REPORT.md'), 'w') as f:
        f.write('\n'.join(header + body))


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = ''.join(ch for ch in title.lower() if ch.isalnum() or ch in ' -')
    return kept.replace(' ', '-')
