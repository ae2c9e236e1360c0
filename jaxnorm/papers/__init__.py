"""Every paper's experiment, and what they share: paired statistics over seeds, declared
checks, the command line and the reproduction report.

* One module per paper, named as its report section (``lawn``, ``flow_pruning``,
  ``beyond_bn``, ``emr``, ``unification``, ``lottery``, ``afan``, ``orthoreg``, ``eman``,
  ``mimicnorm``): its settings, runs, declared checks and ``main(argv)``, the command line
  that ``python -m jaxnorm.papers.<paper>`` and ``scripts/experiments/<paper>.py`` run
  (``lawn_report`` and ``beyond_bn_report`` hold the checks, tables and plots of the two
  largest).
* :mod:`jaxnorm.papers.common`: the experiments' shared flags (``--quick``, ``--seeds``,
  ``--out``, ``--data-dir``, ``--config``), papers'-scale config handling, seeds spread over
  devices and the ``jaxnorm.train.fit`` arms of the ``--config`` path.
* :mod:`jaxnorm.papers.stats`: paired intervals (t or bootstrap), one-sided p-values, Holm's
  step-down control and minimum detectable effects / seeds needed (pure numpy and scipy).
* :mod:`jaxnorm.papers.checks`: a :class:`~jaxnorm.papers.checks.Check` is declared before the
  run (claim or sanity, statistic, test, margin or powered effect, seeds); evaluated on the
  per-seed numbers it gives **supported**, **refuted** or **inconclusive**; a section's
  verdict follows from its claim checks only, and one schema-validated ``results.json`` writer
  carries everything to the report.
* :mod:`jaxnorm.papers.reproduce`: the report (``jaxnorm-reproduce``, ``scripts/reproduce.py``):
  runs every section, caches it under a hash of the code it imports, writes ``REPORT.md``.

Importing this package imports none of the experiments.
"""
