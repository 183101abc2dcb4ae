"""The paper's full Figure 7 setting on a GPU, from one command:

    python -m utils.book.figure7 --device cuda            # about 35,000 steps, 9.9M parameters

trains :func:`utils.studies.sustained.paper_config` (8 layers, 900k sequences of the
compositional anchor rule, batch 2,048, β2 = 0.999, warm-up then cosine decay) with λ_grad(Ĥ)
on the step's batch and on a fixed evaluation batch at every step and the per-block ‖v̂‖, and
writes into ``--output-dir`` (default ``_build/runs/figure7``): ``metrics.csv`` (one row per
step), ``summary.json`` (configuration, versions, spikes), ``rows.csv`` (the study's rows:
:func:`utils.studies.sustained.seed_rows`) and ``figure7.png``. It prints the scored signals.
The shrinking flags (``--n``, ``--d-model``, ``--n-layers``, ``--steps`` ...) exist to test the
command on a CPU; the chapter on the sustained predictor says what the scaled study found.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.studies.sustained import PAPER_FIG7


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book.figure7",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:<i> or cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None,
                        help="where to write (default: _build/runs/figure7)")
    for key, value in PAPER_FIG7.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                            help=f"default {value}")
    args = parser.parse_args(argv)

    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.book.plots import plot_sustained_run
    from utils.studies.sustained import (decay_fits, measured_run, paper_config, score_table,
                                         seed_rows)
    from utils.training.runs import default_output_dir, display_path

    shrink = {k: getattr(args, k) for k in PAPER_FIG7}
    try:
        config = paper_config(args.device, seed=args.seed, **shrink).validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.output_dir) if args.output_dir else default_output_dir("figure7")
    result = measured_run(config, measure_from=1)
    rows = pd.DataFrame(seed_rows(result))
    result.save(out)
    rows.to_csv(out / "rows.csv", index=False)
    fits = {s.start: {k.removeprefix("rate_"): v for k, v in decay_fits(
        result.metrics, s.start, config.beta2).items() if k.startswith("rate_")}
        for s in result.spikes}
    plot_sustained_run(result.metrics, result.spikes, fits)
    plt.gcf().tight_layout()
    plt.savefig(out / "figure7.png", dpi=120)
    print(score_table(rows)[["spikes", "alarms", "precision", "recall", "median_lead"]])
    print(f"{len(result.spikes)} spikes in {result.seconds:.0f} s; wrote {display_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
