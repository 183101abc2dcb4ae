"""utils: measure Adam's preconditioned curvature and its loss spikes.

The library behind the book reproducing Bai et al., "Adaptive Preconditioners Trigger Loss
Spikes in Adam" (arXiv:2506.04805). Modules, in the order data flows through them:
``adam_state``, ``hvp``, ``curvature``, ``tracker``, ``spikes``, ``models``, ``data``,
``runs``, ``verdicts``, ``plots``.
"""
__version__ = "0.1.0"
