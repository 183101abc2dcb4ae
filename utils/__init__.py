"""utils: measure Adam's preconditioned curvature and its loss spikes.

The library behind the book reproducing Bai et al., "Adaptive Preconditioners Trigger Loss
Spikes in Adam" (arXiv:2506.04805). Its layers, from the bottom up; a module imports only from
its own layer and those below it (``tests/test_layers.py`` holds this):

* :mod:`utils.validation` — argument checks with errors that name the parameter;
* :mod:`utils.curvature` — the instrument: Adam's state, Hessian-vector products, the
  preconditioned Hessian, its top eigenpair, the per-step tracker;
* :mod:`utils.events` — pure functions on a run's series: the spike rule, the signals and
  their scoring, a spike's stages;
* :mod:`utils.training` — one training loop (and K seeds batched), models, data, losses,
  optimizers, the signal recorder;
* :mod:`utils.monitor` — the spike monitor, the user-facing API for any training loop;
* :mod:`utils.studies` — the claims' verdicts over runs and seeds, the chapters' settings and
  studies;
* :mod:`utils.book` — what serves the book: chapter parameters, plots, stored ensembles,
  sweeps on Dask.
"""
__version__ = "0.1.0"
