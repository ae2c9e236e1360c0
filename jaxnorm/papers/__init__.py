"""What every paper's experiment shares: paired statistics over seeds and declared checks.

* :mod:`jaxnorm.papers.stats`: paired intervals (t or bootstrap), one-sided p-values, Holm's
  step-down control and minimum detectable effects / seeds needed (pure numpy and scipy).
* :mod:`jaxnorm.papers.checks`: a :class:`~jaxnorm.papers.checks.Check` is declared before the
  run (claim or sanity, statistic, test, margin or powered effect, seeds); evaluated on the
  per-seed numbers it gives **supported**, **refuted** or **inconclusive**; a section's
  verdict follows from its claim checks only, and one schema-validated ``results.json`` writer
  carries everything to the report.
"""
