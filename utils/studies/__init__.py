"""The claims and the chapters' studies: verdicts, the claims' tests on one run (``claims``)
and over seeds (``ensemble``), the chapters' run settings (``settings``), the book's one set
of rules for scoring alarms (``scoring``, chapters 4, 6, 9, 10 and 11), and the studies of
chapters 5-11 (``interventions``, ``predictors``, ``mitigations``, ``phase``, ``watch``,
``spike_types``, ``sustained``).

May import: :mod:`utils.monitor`, :mod:`utils.training`, :mod:`utils.events`,
:mod:`utils.curvature` and :mod:`utils.validation`; never :mod:`utils.book`.
"""
