"""Declared checks, their outcomes, a paper's verdict, and the one ``results.json`` writer.

A :class:`Check` is written down before the run: the claim it tests (a sentence), the
statistic measured per seed, the test, the margin and the effect it is powered for, the number
of seeds, and its kind:

* **claim**: can confirm or refute the paper;
* **sanity**: mechanics that must hold for the experiment to mean anything (budgets, what a
  method does by construction). It never counts toward a verdict; a failing one makes the
  section **invalid**.

Evaluated on the per-seed values of two arms paired by seed (or of one arm against a
constant), a check gives one of :data:`OUTCOMES` from the two-sided interval of the mean
difference (``confidence`` 0.9 by default: each end a one-sided 95 % bound):

=================  ====================================  =====================================
test               supported when the interval ...       refuted when it ...
=================  ====================================  =====================================
superiority        lies above ``margin`` (the null)      lies below ``effect`` (the effect it
                                                         is powered for; ``margin`` if None)
non_inferiority    lies above ``-margin``                lies below ``effect`` (0 if None)
equivalence        lies inside ``(-margin, margin)``     excludes 0 (and is not inside)
rule               (a boolean rule holds in every seed)  (the rule fails in some seed)
=================  ====================================  =====================================

and **inconclusive** otherwise: the interval holds both the null and the effect. Two identical
arms therefore never support superiority; two arms equal up to small noise support
equivalence. Without a noise
estimate the outcome is inconclusive as well: fewer than two finite seeds, or **zero spread**,
every seed's difference the same (a quantized statistic, e.g. one test image of 360 in every
seed, gives a degenerate interval that would otherwise decide on a point). A claim over several
cells (e.g. every batch size) uses Holm's step-down control on the cells' one-sided p-values
for "supported" (:meth:`Check.evaluate_cells`).

A paper's :func:`verdict`: **invalid** if a sanity check is not supported; else
**reproduced** when every claim check is supported, **mixed** when some are supported and some
refuted, **not reproduced** when a claim is refuted and none supported, **inconclusive**
otherwise (a section without claim checks included).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxnorm.papers import stats

KINDS = ('claim', 'sanity')
TESTS = ('superiority', 'non_inferiority', 'equivalence', 'rule')
OUTCOMES = ('supported', 'refuted', 'inconclusive')
VERDICTS = ('reproduced', 'mixed', 'not reproduced', 'inconclusive', 'invalid')
SCALES = ('quick', 'standard', 'paper')
AGGREGATES = ('all', 'any')
# Accuracies averaged in float32 differ by ~1e-6 of their size where the true values agree.
SPREAD_TOLERANCE = 1e-5

VERDICT_RULE = (
    'Verdicts come from claim checks only: **reproduced** when every claim check is supported, '
    '**mixed** when some are supported and some refuted, **not reproduced** when a claim check '
    'is refuted and none supported, **inconclusive** otherwise. A sanity check that is not '
    'supported makes the section **invalid**. A check is supported when the paired interval '
    'over seeds (90 %, two-sided) clears its null, refuted when it excludes the effect the '
    'check is powered for, and inconclusive when it holds both or when there is no noise '
    'estimate (fewer than two seeds, or the same difference in every seed).')


class ResultsSchemaError(ValueError):
    """A ``results.json`` (or the dict about to become one) breaks the schema."""


@dataclasses.dataclass(frozen=True)
class Check:
    """A check declared before the run.

    Attributes:
        name: short identifier, unique within a section.
        claim: the sentence tested.
        kind: ``'claim'`` or ``'sanity'``.
        statistic: what one seed contributes, e.g. "A-FAN minus baseline test accuracy
            (points)".
        test: one of :data:`TESTS`.
        seeds: the number of seeds declared for it.
        margin: superiority: the null (difference must exceed it); non-inferiority and
            equivalence: the tolerated difference (positive).
        effect: the difference the check is powered for (superiority, non-inferiority); None
            when it is not powered (quick scale).
        confidence: two-sided coverage of the interval.
        rule: for ``test='rule'``, the rule in words.
        aggregate: for several cells, ``'all'`` (the claim holds in every cell) or ``'any'``.
    """

    name: str
    claim: str
    kind: str
    statistic: str
    test: str
    seeds: int
    margin: float = 0.0
    effect: float | None = None
    confidence: float = 0.9
    rule: str | None = None
    aggregate: str = 'all'

    def __post_init__(self):
        _require(self.kind in KINDS, f'check {self.name!r}: kind {self.kind!r} not in {KINDS}')
        _require(self.test in TESTS, f'check {self.name!r}: test {self.test!r} not in {TESTS}')
        _require(self.aggregate in AGGREGATES,
                 f'check {self.name!r}: aggregate {self.aggregate!r} not in {AGGREGATES}')
        _require(self.seeds >= 1, f'check {self.name!r}: seeds must be >= 1, got {self.seeds}')
        _require(0 < self.confidence < 1,
                 f'check {self.name!r}: confidence must lie in (0, 1), got {self.confidence}')
        if self.test in ('non_inferiority', 'equivalence'):
            _require(self.margin > 0, f'check {self.name!r}: {self.test} needs a positive '
                                      f'margin, got {self.margin}')
        _require((self.test == 'rule') == (self.rule is not None),
                 f'check {self.name!r}: give rule= exactly for test="rule"')

    @property
    def null(self) -> float:
        """The value the interval must clear for "supported"."""
        return -self.margin if self.test == 'non_inferiority' else self.margin

    @property
    def target(self) -> float:
        """The effect whose exclusion means "refuted" (superiority / non-inferiority)."""
        if self.effect is not None:
            return self.effect
        return self.margin if self.test == 'superiority' else 0.0

    def describe(self) -> str:
        """The decision rule in words, for the report."""
        level = f'{100 * self.confidence:.0f} % paired t-interval of the mean difference'
        if self.test == 'rule':
            return f'rule: {self.rule}'
        if self.test == 'superiority':
            text = (f'superiority: supported if the {level} lies above {self.margin:g}, refuted '
                    f'if below {self.target:g}')
        elif self.test == 'non_inferiority':
            text = (f'non-inferiority (margin {self.margin:g}): supported if the {level} lies '
                    f'above {-self.margin:g}, refuted if below {self.target:g}')
        else:
            text = (f'equivalence (margin {self.margin:g}): supported if the {level} lies inside '
                    f'(-{self.margin:g}, {self.margin:g}), refuted if it excludes 0')
        powered = ('not powered' if self.effect is None else
                   f'powered for {self.effect:g}')
        return f'{text}; {powered}; {self.seeds} seeds declared'

    def outcome(self, low: float, high: float) -> str:
        """The outcome of an interval ``[low, high]`` under this check's test."""
        if self.test == 'equivalence':
            if -self.margin < low and high < self.margin:
                return 'supported'
            return 'refuted' if low > 0 or high < 0 else 'inconclusive'
        if low > self.null:
            return 'supported'
        return 'refuted' if high < self.target else 'inconclusive'

    def evaluate(self, a: Sequence[float], b: Sequence[float] | None = None, *,
                 method: str = 't') -> dict:
        """Outcome on per-seed values ``a`` paired with ``b`` (or ``a`` against 0).

        Seeds where either arm is not finite (a diverged run) are left out and counted in
        ``dropped``; with fewer than two seeds left, or the same difference in every seed
        (``zero_spread``), there is no noise estimate and the outcome is inconclusive.

        Returns:
            The result dict of the schema (:func:`validate_check_result`).
        """
        _require(self.test != 'rule', f'check {self.name!r} is a rule: use evaluate_rule')
        kept_a, kept_b, dropped = stats.finite_pairs(a, b)
        values = {'a': a, 'b': b}
        if kept_a.size < 2:
            result = self._result(None, None, None, None, kept_a.size, None, 'inconclusive',
                                  values=values)
        else:
            interval = stats.paired_interval(kept_a, kept_b, confidence=self.confidence,
                                             method=method)
            p_value = (None if self.test == 'equivalence' else
                       stats.p_greater(kept_a, kept_b, null=self.null))
            flat = zero_spread(interval, kept_a, kept_b)
            outcome = 'inconclusive' if flat else self.outcome(interval.low, interval.high)
            result = self._result(interval.mean, interval.low, interval.high, interval.sd,
                                  interval.n, p_value, outcome, values=values)
            result['zero_spread'] = flat
            if result['zero_spread']:  # what the point would have decided, for the report
                result['point_outcome'] = self.outcome(interval.low, interval.high)
        result['dropped'] = dropped
        return result

    def evaluate_cells(self, cells: Mapping[str, tuple[Sequence[float], Sequence[float] | None]]
                       ) -> dict:
        """Outcome of a superiority / non-inferiority claim over several cells, Holm-controlled.

        A cell is supported when its Holm-adjusted one-sided p-value is at most
        ``(1 - confidence) / 2``; refuted when its interval lies below the target; a cell with
        fewer than two finite seeds, or with zero spread, is inconclusive (diverged seeds are
        dropped). The check
        aggregates the cells by ``aggregate`` (``'all'``: supported if every cell is, refuted if
        one is; ``'any'``: supported if one is, refuted if every cell is).
        """
        _require(self.test in ('superiority', 'non_inferiority'),
                 f'check {self.name!r}: cells need a superiority or non-inferiority test')
        _require(bool(cells), f'check {self.name!r}: no cells')
        finite = {name: stats.finite_pairs(*pair) for name, pair in cells.items()}
        names = list(finite)
        intervals = [stats.paired_interval(*finite[c][:2], confidence=self.confidence)
                     if finite[c][0].size >= 2 else None for c in names]
        flat = [i is not None and zero_spread(i, *finite[c][:2])
                for c, i in zip(names, intervals)]
        usable = [i is not None and not f for i, f in zip(intervals, flat)]
        # A cell without a noise estimate cannot be supported: p = 1 keeps Holm honest.
        adjusted = stats.holm([stats.p_greater(*finite[c][:2], null=self.null) if ok else 1.0
                               for c, ok in zip(names, usable)])
        alpha = (1 - self.confidence) / 2
        rows, outcomes = [], []
        for cell, interval, p, ok, is_flat in zip(names, intervals, adjusted, usable, flat):
            if not ok:
                outcome = 'inconclusive'
            else:
                outcome = ('supported' if p <= alpha else
                           'refuted' if interval.high < self.target else 'inconclusive')
            outcomes.append(outcome)
            rows.append({'cell': cell, 'estimate': None if interval is None else interval.mean,
                         'low': None if interval is None else interval.low,
                         'high': None if interval is None else interval.high,
                         'n': int(finite[cell][0].size), 'p_holm': float(p),
                         'zero_spread': is_flat,
                         'outcome': outcome})
            if rows[-1]['zero_spread']:
                rows[-1]['point_outcome'] = self.outcome(interval.low, interval.high)
        if self.aggregate == 'all':
            outcome = ('supported' if all(o == 'supported' for o in outcomes) else
                       'refuted' if 'refuted' in outcomes else 'inconclusive')
        else:
            outcome = ('supported' if 'supported' in outcomes else
                       'refuted' if all(o == 'refuted' for o in outcomes) else 'inconclusive')
        judged = [i for i, interval in enumerate(intervals) if interval is not None]
        if judged:
            worst = min(judged, key=lambda i: intervals[i].low)
            result = self._result(intervals[worst].mean, intervals[worst].low,
                                  intervals[worst].high, intervals[worst].sd,
                                  intervals[worst].n, float(adjusted[worst]), outcome)
        else:
            result = self._result(None, None, None, None, 0, None, outcome)
        result['dropped'] = sum(dropped for _, _, dropped in finite.values())
        result['zero_spread'] = any(row['zero_spread'] for row in rows)
        result['cells'] = rows
        return result

    def evaluate_rule(self, holds: bool | Sequence[bool], value: Any = None) -> dict:
        """Outcome of a rule: supported when it holds (in every seed, for a sequence; ``n`` is
        the number of values judged)."""
        _require(self.test == 'rule', f'check {self.name!r} is not a rule')
        per_seed = np.atleast_1d(np.asarray(holds, dtype=bool))
        outcome = 'supported' if per_seed.all() else 'refuted'
        return self._result(None if value is None else _number(value), None, None, None,
                            int(per_seed.size), None, outcome,
                            values={'holds': per_seed.tolist()})

    def _result(self, estimate, low, high, sd, n, p_value, outcome, values=None) -> dict:
        result = {
            'name': self.name, 'claim': self.claim, 'kind': self.kind,
            'statistic': self.statistic, 'test': self.test, 'rule': self.describe(),
            'margin': self.margin, 'effect': self.effect, 'confidence': self.confidence,
            'seeds': self.seeds, 'n': int(n), 'estimate': _number(estimate), 'low': _number(low),
            'high': _number(high), 'sd': _number(sd), 'p_value': _number(p_value),
            'outcome': outcome,
        }
        if values is not None:
            result['values'] = to_json(values)
        return result


def zero_spread(interval: stats.Interval, a: np.ndarray, b: np.ndarray | None) -> bool:
    """Whether the per-seed differences are all the same up to float32 rounding of the arms'
    values (spread <= :data:`SPREAD_TOLERANCE` times their largest magnitude): no noise
    estimate."""
    scale = max(np.abs(a).max(), 0.0 if b is None else np.abs(b).max())
    return interval.sd <= SPREAD_TOLERANCE * scale


def verdict(check_results: Sequence[Mapping]) -> str:
    """A section's verdict from its evaluated checks (see the module docstring)."""
    if any(r['kind'] == 'sanity' and r['outcome'] != 'supported' for r in check_results):
        return 'invalid'
    claims = [r['outcome'] for r in check_results if r['kind'] == 'claim']
    supported, refuted = claims.count('supported'), claims.count('refuted')
    if claims and supported == len(claims):
        return 'reproduced'
    if supported and refuted:
        return 'mixed'
    return 'not reproduced' if refuted else 'inconclusive'


# ----------------------------------------------------------------------------- schema

_CHECK_FIELDS = {
    'name': str, 'claim': str, 'kind': str, 'statistic': str, 'test': str, 'rule': str,
    'margin': (int, float), 'effect': (int, float, type(None)), 'confidence': float,
    'seeds': int, 'n': int, 'estimate': (int, float, type(None)),
    'low': (int, float, type(None)), 'high': (int, float, type(None)),
    'sd': (int, float, type(None)), 'p_value': (int, float, type(None)), 'outcome': str,
}
_RESULTS_FIELDS = {
    'paper': str, 'claim': str, 'ran': str, 'scale': str, 'seeds': int, 'table': list,
    'checks': list, 'figures': list, 'seconds': (int, float), 'verdict': str,
}


def validate_check_result(result: Mapping, where: str = 'check') -> None:
    """Raises :class:`ResultsSchemaError` naming the field unless ``result`` fits the schema."""
    for field, types in _CHECK_FIELDS.items():
        if field not in result:
            raise ResultsSchemaError(f'{where}: missing field {field!r}')
        if isinstance(result[field], bool) or not isinstance(result[field], types):
            raise ResultsSchemaError(f'{where}: field {field!r} has {result[field]!r} '
                                     f'({type(result[field]).__name__}), expected {types}')
    for field, allowed in (('kind', KINDS), ('test', TESTS), ('outcome', OUTCOMES)):
        if result[field] not in allowed:
            raise ResultsSchemaError(f'{where}: {field} {result[field]!r} not in {allowed}')
    if result['test'] != 'rule' and result['outcome'] != 'inconclusive' and \
            (result['low'] is None or result['high'] is None):
        raise ResultsSchemaError(f'{where}: a {result["test"]} outcome needs its interval')


def validate_results(results: Mapping, where: str = 'results.json') -> None:
    """Raises :class:`ResultsSchemaError` unless ``results`` fits the report's schema."""
    for field, types in _RESULTS_FIELDS.items():
        if field not in results:
            raise ResultsSchemaError(f'{where}: missing field {field!r}')
        if isinstance(results[field], bool) or not isinstance(results[field], types):
            raise ResultsSchemaError(f'{where}: field {field!r} has type '
                                     f'{type(results[field]).__name__}, expected {types}')
    if results['scale'] not in SCALES:
        raise ResultsSchemaError(f'{where}: scale {results["scale"]!r} not in {SCALES}')
    names = [c.get('name') for c in results['checks']]
    if len(set(names)) != len(names):
        raise ResultsSchemaError(f'{where}: check names repeat: {names}')
    for index, check in enumerate(results['checks']):
        validate_check_result(check, f'{where}: checks[{index}] ({check.get("name")!r})')
    if not all(isinstance(line, str) for line in results['table']):
        raise ResultsSchemaError(f'{where}: table must be a list of markdown lines')
    if not all(isinstance(name, str) for name in results['figures']):
        raise ResultsSchemaError(f'{where}: figures must be file names')
    expected = verdict(results['checks'])
    if results['verdict'] != expected:
        raise ResultsSchemaError(f'{where}: verdict {results["verdict"]!r} does not follow from '
                                 f'its checks ({expected!r})')


def write_results(out_dir: str, *, paper: str, claim: str, ran: str, scale: str, seeds: int,
                  table: Sequence[str], checks: Sequence[Mapping], figures: Sequence[str],
                  started: float, **extra) -> str:
    """Validates and writes ``out_dir/results.json`` (strict JSON); returns its path.

    Args:
        paper, claim, ran: the paper's title, its central claim, what was run.
        scale: one of :data:`SCALES`.
        seeds: seeds per arm.
        table: markdown lines (mean +- std over seeds).
        checks: results of :meth:`Check.evaluate` / ``evaluate_cells`` / ``evaluate_rule``.
        figures: PNG paths (their basenames are stored; the files sit in ``out_dir``).
        started: ``time.perf_counter()`` at the experiment's start.
        **extra: kept as they are (raw per-seed numbers, settings); non-finite numbers
            become null.
    """
    results = {'paper': paper, 'claim': claim, 'ran': ran, 'scale': scale, 'seeds': int(seeds),
               'table': list(table), 'checks': to_json(list(checks)),
               'figures': [os.path.basename(f) for f in figures],
               'seconds': time.perf_counter() - started, 'verdict': verdict(checks),
               **to_json(extra)}
    validate_results(results, os.path.join(out_dir, 'results.json'))
    path = os.path.join(out_dir, 'results.json')
    temporary = path + '.tmp'
    with open(temporary, 'w') as f:
        json.dump(results, f, indent=1, allow_nan=False)
    os.replace(temporary, path)
    print('\n'.join(table))
    for check in results['checks']:
        print(f"{check['name']} [{check['kind']}]: {check['outcome']} ({check['rule']})")
    print(f"verdict: {results['verdict']}; {results['seconds']:.0f} s; results in {out_dir}")
    return path


def read_results(path: str) -> dict:
    """``results.json`` at ``path``, validated (:class:`ResultsSchemaError` names the field)."""
    with open(path) as f:
        results = json.load(f)
    validate_results(results, path)
    return results


def to_json(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and Python numbers, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.generic, float)):
        return _number(value)
    return value


def _number(value: Any) -> Any:
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    number = float(value) if isinstance(value, (float, np.floating)) else value
    if isinstance(number, np.integer):
        return int(number)
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
