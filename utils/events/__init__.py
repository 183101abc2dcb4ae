"""Pure functions on a run's series: the book's one spike rule (``spikes``), the warning
signals and their scoring (``detectors``), and the five stages of a spike (``stages``).

No training, no curvature: tables and arrays in, events and scores out. May import:
:mod:`utils.curvature` and :mod:`utils.validation`.
"""
