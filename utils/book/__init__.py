"""What serves the book: chapter parameters and re-runs (``chapters``, ``rerun``), the plots,
the stored ensembles (``ensembles``), the sweeps on Dask (``sweeps``, ``parallel``,
``watch_sweep``), the stored first steps (``prefixes``) and the paper's Figure 7 setting on a
GPU (``figure7``).

The top layer: may import everything below it; nothing in ``utils`` imports it.
"""
