"""What serves the book: chapter parameters and re-runs (``chapters``, ``rerun``), the plots,
the stored ensembles (``ensembles``), the sweeps on Dask (``sweeps``, ``parallel``,
``watch_sweep``) and the stored first steps (``prefixes``).

The top layer: may import everything below it; nothing in ``utils`` imports it.
"""
