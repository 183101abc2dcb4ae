"""The house style: loss curves with spikes marked, curvature with the 2/η line.

Plots take the metrics table (and spikes) and know nothing of training.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .spikes import Spike

LABELS = {
    "lambda_max_H": r"$\lambda_{\max}(H)$",
    "lambda_max_pre": r"$\lambda_{\max}(\hat H)$",
    "lambda_grad_H": r"$\lambda_{\rm grad}(H)$",
    "lambda_grad_pre": r"$\lambda_{\rm grad}(\hat H)$ (B)",
    "lambda_grad_pre_a": r"$\lambda_{\rm grad}(\hat H)$ (A)",
}


def use_house_style():
    """Seaborn's white grid, readable fonts, one figure width for every chapter."""
    sns.set_theme(style="whitegrid", context="notebook", rc={"figure.figsize": (8, 3.2),
                                                            "figure.dpi": 90})


def mark_spikes(ax, spikes: list[Spike], label: bool = True):
    """Shade each spike from its start to its peak, on any axes whose x is the step."""
    for i, s in enumerate(spikes):
        ax.axvspan(s.start, max(s.peak, s.start + 1), color="tab:red", alpha=0.15, lw=0,
                   label="spike (start to peak)" if label and i == 0 else None)


def plot_loss(metrics, spikes: list[Spike] = (), ax=None, label: str = "loss"):
    """Loss against step on a log scale, with the spikes shaded."""
    ax = ax or plt.gca()
    ax.semilogy(metrics["step"], metrics["loss"], lw=1, label=label)
    finite = metrics["loss"][np.isfinite(metrics["loss"]) & (metrics["loss"] > 0)]
    if len(finite):  # keep matplotlib's log autoscale from padding by decades
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, finite.min() / 3), min(hi, finite.max() * 3))
    mark_spikes(ax, spikes)
    ax.set_xlabel("step $t$")
    ax.set_ylabel("training loss (MSE)")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_curvature(metrics, lr: float, columns=("lambda_max_pre", "lambda_max_H"),
                   spikes: list[Spike] = (), ax=None, log: bool = True):
    """The named curvature columns against step, with the stability threshold 2/η."""
    ax = ax or plt.gca()
    for col in columns:
        if col in metrics:
            sub = metrics.dropna(subset=[col])
            ax.plot(sub["step"], sub[col], lw=1, label=LABELS.get(col, col))
    ax.axhline(2.0 / lr, color="k", ls="--", lw=1, label=r"$2/\eta$")
    mark_spikes(ax, spikes, label=False)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step $t$")
    ax.set_ylabel("curvature")
    ax.legend(loc="best", fontsize="small")
    return ax
