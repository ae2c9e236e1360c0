"""How many seeds a claim check needs, sized from a pilot run of it.

An evaluated check (:mod:`jaxnorm.papers.checks`) keeps the paired standard deviation ``sd``
of its per-seed statistic over ``n`` seeds. Taking that run as a pilot, with the one-sided
paired t-test the check's interval implies (level ``alpha = (1 - confidence) / 2``, divided
by the number of cells of a claim over several cells: Bonferroni, Holm's first step, so
conservative) and power :data:`POWER`:

* **detectable**: the smallest distance between the true mean difference and the check's
  null that ``n`` seeds detect (:func:`jaxnorm.papers.stats.minimum_detectable_effect`);
* **sized for**: the distance the check must resolve. Superiority: ``effect - margin`` when
  an effect is declared (none otherwise). Non-inferiority: ``margin``, a true difference of 0
  against the null ``-margin``. Equivalence: ``margin`` on each side of a true 0, each side
  at power ``(1 + POWER) / 2`` so that both hold with probability >= :data:`POWER`;
* **seeds**: the fewest seeds reaching that power (:func:`jaxnorm.papers.stats.seeds_needed`).

The pilot's noise belongs to its own schedule (a longer run usually has another), so the
count is where a larger scale's declaration starts, not a guarantee.

Reference: Julious, "Sample sizes for clinical trials with Normal data", Statistics in
Medicine 23 (2004), for the paired t-test's sample size on the noncentral t.
"""
from __future__ import annotations

from collections.abc import Mapping

from jaxnorm.papers import stats

POWER = 0.8
MAX_SEEDS = 1000


def sizing(result: Mapping) -> dict | None:
    """The pilot sizing of an evaluated claim check, or None where there is nothing to size
    (a sanity check, a rule, fewer than two finite seeds, or no spread between them).

    Returns:
        ``{'sd', 'n', 'cells', 'alpha', 'power', 'detectable', 'sized_for', 'seeds'}``;
        ``sized_for`` is None for a superiority claim without a declared effect, ``seeds``
        is None then or when more than :data:`MAX_SEEDS` would be needed.
    """
    sd, n = result['sd'], result['n']
    if result['kind'] != 'claim' or result['test'] == 'rule' or sd is None or sd <= 0 or n < 2:
        return None
    cells = len(result.get('cells') or ()) or 1
    alpha = (1 - result['confidence']) / 2 / cells
    power = (1 + POWER) / 2 if result['test'] == 'equivalence' else POWER
    if result['test'] == 'superiority':
        sized_for = None if result['effect'] is None else result['effect'] - result['margin']
    else:
        sized_for = result['margin']
    seeds = None
    if sized_for is not None and sized_for > 0:
        try:
            seeds = stats.seeds_needed(sized_for, sd, alpha=alpha, target_power=power,
                                       max_seeds=MAX_SEEDS)
        except ValueError:  # more than MAX_SEEDS: reported as None
            seeds = None
    return {'sd': sd, 'n': n, 'cells': cells, 'alpha': alpha, 'power': power,
            'detectable': stats.minimum_detectable_effect(sd, n, alpha=alpha,
                                                          target_power=power),
            'sized_for': sized_for, 'seeds': seeds}


def sizing_table(results: Mapping) -> list[str]:
    """Markdown lines: one row per claim check of ``results`` that :func:`sizing` sizes;
    no lines when none does."""
    rows = []
    for check in results['checks']:
        sized = sizing(check)
        if sized is None:
            continue
        target = '–' if sized['sized_for'] is None else f"{sized['sized_for']:.3g}"
        seeds = ('–' if sized['sized_for'] is None else
                 f"> {MAX_SEEDS}" if sized['seeds'] is None else str(sized['seeds']))
        rows.append(f"| {check['name']} | {check['test'].replace('_', '-')} | "
                    f"{sized['sd']:.3g} | {sized['n']} | {sized['cells']} | "
                    f"{sized['alpha']:.3g} | {sized['detectable']:.3g} | {target} | {seeds} |")
    if not rows:
        return []
    return [f'**Sizing from this run** (as a pilot; power {POWER:.0%}, one-sided test per '
            'cell, Bonferroni over cells; distances from the null, in the statistic\'s units; '
            '`jaxnorm.papers.sizing`):', '',
            '| check | test | paired sd | n | cells | alpha | detectable at n | sized for | '
            'seeds needed |', '|---|---|---|---|---|---|---|---|---|', *rows, '']
