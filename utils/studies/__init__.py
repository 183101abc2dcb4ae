"""The claims and the chapters' studies: verdicts, the claims' tests on one run (``claims``)
and over seeds (``ensemble``), the chapters' run settings (``settings``), the book's one set
of rules for scoring alarms (``scoring``, chapters 4, 6 and 9), and the studies of chapters
5-9 (``interventions``, ``predictors``, ``mitigations``, ``phase``, ``watch``).

May import: :mod:`utils.monitor`, :mod:`utils.training`, :mod:`utils.events`,
:mod:`utils.curvature` and :mod:`utils.validation`; never :mod:`utils.book`.
"""
