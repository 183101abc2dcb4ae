"""Training: one run from a validated config to its metrics table (``runs``), K seeds batched
(``seeds``), the models, data sets (``data``, and the language model's corpus and model in
``lm``), losses, optimizers (torch's and the libraries'), and the per-step signal recorder.

May import: :mod:`utils.events`, :mod:`utils.curvature` and :mod:`utils.validation`.
"""
