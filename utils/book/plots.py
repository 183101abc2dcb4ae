"""The house style: loss curves with spikes marked, curvature with the 2/η line.

Plots take the metrics table (and spikes) and know nothing of training.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from utils.studies.claims import predicted_decay_growth
from utils.studies.onset import onset_summary
from utils.studies.quadratic import decay_rate, trajectory_summary
from utils.studies.spike_types import CURVE_EVERY, WINDOW
from utils.events.spikes import Spike

LABELS = {
    "lambda_max_H": r"$\lambda_{\max}(H)$",
    "lambda_max_pre": r"$\lambda_{\max}(\hat H)$",
    "lambda_grad_H": r"$\lambda_{\rm grad}(H)$",
    "lambda_grad_pre": r"$\lambda_{\rm grad}(\hat H)$ (B)",
    "lambda_grad_pre_a": r"$\lambda_{\rm grad}(\hat H)$ (A)",
}
PAPER_GRAD = r"$\lambda_{\rm grad}(\hat H)$"
"""λ_grad(Ĥ) in the paper's form (A), labelled as the paper labels it, without the form."""



def legend(ax, **kwargs) -> None:
    """``ax.legend(**kwargs)`` where ``ax`` has labelled artists; nothing otherwise (a run with
    no spike has no spike to label, and matplotlib would warn on the page)."""
    if ax.get_legend_handles_labels()[1]:
        ax.legend(**kwargs)

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
    legend(ax, loc="best", fontsize="small")
    return ax


def plot_curvature(metrics, lr: float, columns=("lambda_max_pre", "lambda_max_H"),
                   spikes: list[Spike] = (), ax=None, log: bool = True, labels=None):
    """The named curvature columns against step, with the stability threshold 2/η; each
    labelled by ``labels`` (column -> text), else by :data:`LABELS`, else by its name."""
    ax = ax or plt.gca()
    labels = {**LABELS, **(labels or {})}
    for col in columns:
        if col in metrics:
            sub = metrics.dropna(subset=[col])
            ax.plot(sub["step"], sub[col], lw=1, label=labels.get(col, col))
    ax.axhline(2.0 / lr, color="k", ls="--", lw=1, label=r"$2/\eta$")
    mark_spikes(ax, spikes, label=False)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step $t$")
    ax.set_ylabel("curvature")
    legend(ax, loc="best", fontsize="small")
    return ax


def plot_decoupling(metrics, beta2: float, spikes: list[Spike] = (), axes=None):
    """Two panels: the fraction of coordinates with g²/v < 1e-2, and median v_t/v_{t-1} with β2."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    m = metrics.dropna(subset=["v_ratio_median"])
    ax1, ax2 = axes
    ax1.plot(m["step"], m["g2_over_v_frac_small"], lw=1)
    ax1.set_ylabel(r"fraction with $g^2/v < 10^{-2}$")
    ax1.set_ylim(-0.02, 1.02)
    ax2.plot(m["step"], m["v_ratio_median"], lw=1, label=r"median $v_t/v_{t-1}$")
    ax2.axhline(beta2, color="k", ls="--", lw=1, label=r"$\beta_2$")
    ax2.set_ylim(beta2 - 3 * (1 - beta2), beta2 + 6 * (1 - beta2))
    ax2.set_ylabel(r"$v_t / v_{t-1}$ (median)")
    legend(ax2, loc="upper right", fontsize="small")
    for ax in axes:
        mark_spikes(ax, spikes, label=False)
        ax.set_xlabel("step $t$")
    return axes


def plot_growth_vs_decay(stretch, beta2: float, lr: float, ax=None):
    """λ_max(Ĥ) over one calm stretch against the curve pure β2-decay of v predicts from its
    first value, and λ_max(H) over the same steps, with 2/η."""
    ax = ax or plt.gca()
    steps = stretch["step"].to_numpy()
    rate = predicted_decay_growth(steps, beta2)
    pred = stretch["lambda_max_pre"].iloc[0] * np.exp(
        np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(steps))]))
    ax.plot(steps, stretch["lambda_max_pre"], lw=1.5, label=LABELS["lambda_max_pre"] + " measured")
    ax.plot(steps, pred, ls=":", lw=2, label=r"$\propto \hat v_t^{-1/2}$ with $v_t = \beta_2 v_{t-1}$")
    ax.plot(steps, stretch["lambda_max_H"], lw=1.5, label=LABELS["lambda_max_H"])
    ax.axhline(2.0 / lr, color="k", ls="--", lw=1, label=r"$2/\eta$")
    ax.set_xlabel("step $t$")
    ax.set_ylabel("curvature")
    legend(ax, loc="best", fontsize="small")
    return ax


def plot_alignment(metrics, spikes: list[Spike] = (), ax=None):
    """|cos| between the gradient and the top eigendirection of Ĥ against step (log scale)."""
    ax = ax or plt.gca()
    m = metrics.dropna(subset=["cos_grad_top_sym"])
    ax.semilogy(m["step"], m["cos_grad_top_sym"], lw=1,
                label=r"$|\cos(D^{1/2}g,\, u)|$ (symmetric form)")
    ax.semilogy(m["step"], m["cos_grad_top"], lw=1, alpha=0.7,
                label=r"$|\cos(g,\, D^{1/2}u)|$ (parameter space)")
    mark_spikes(ax, spikes)
    ax.set_xlabel("step $t$")
    ax.set_ylabel("alignment $|\\cos|$")
    legend(ax, loc="lower left", fontsize="small")
    return ax


def plot_predictor_timeline(crossings: dict, spikes: list[Spike], ax=None):
    """One row per predictor: its crossings of 2/η as bars; spikes shaded across all rows.

    ``crossings`` maps a label to a list of :class:`~utils.events.spikes.Crossing`.
    """
    ax = ax or plt.gca()
    for k, (label, cs) in enumerate(crossings.items()):
        ax.broken_barh([(c.start, max(c.duration, 1)) for c in cs], (k - 0.35, 0.7),
                       color=f"C{k}")
    mark_spikes(ax, spikes)
    ax.set_yticks(range(len(crossings)), [LABELS.get(k, k) + r" $> 2/\eta$" for k in crossings])
    ax.set_ylim(-0.6, len(crossings) - 0.4)
    ax.set_xlabel("step $t$")
    legend(ax, loc="upper left", fontsize="small")
    return ax


STAGE_NAMES = ("stable descent", "decoupling:\n$g^2 \\ll v$, $v$ decays",
               "$\\lambda_{\\max}(\\hat H) > 2/\\eta$,\nloss still low", "loss grows",
               "$v$ jumps,\nrecovery")


def plot_mechanism(metrics, stages, lr: float, after: int = 80):
    """The mechanism on one measured spike: loss, median g²/v, and λ_max(Ĥ) against 2/η, over
    the five stages of ``stages`` (a :class:`~utils.events.stages.SpikeStages`), shaded and
    numbered. Returns the figure."""
    lo, hi = stages.bounds[0], stages.recovered + after
    m = metrics[(metrics["step"] >= lo) & (metrics["step"] <= hi)]
    tracked = m.dropna(subset=["lambda_max_pre"])
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1, 1.2]})
    ax_loss, ax_v, ax_lam = axes
    ax_loss.semilogy(m["step"], m["loss"], lw=1.2, color="tab:blue")
    ax_loss.set_ylabel("training loss")
    ax_v.semilogy(tracked["step"], tracked["g2_over_v_median"], lw=1.2, color="tab:purple")
    ax_v.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_v.set_ylabel("median $g_t^2 / v_{t-1}$")
    ax_lam.plot(tracked["step"], tracked["lambda_max_pre"], lw=1.4, label=LABELS["lambda_max_pre"])
    if "lambda_max_H" in tracked:
        ax_lam.plot(tracked["step"], tracked["lambda_max_H"], lw=1.2, label=LABELS["lambda_max_H"])
    ax_lam.axhline(2.0 / lr, color="k", ls="--", lw=1, label=r"$2/\eta$")
    ax_lam.set_ylabel("curvature")
    ax_lam.set_xlabel("step $t$")
    legend(ax_lam, loc="lower left", fontsize="small")
    ax_lam.set_xlim(lo, hi)
    palette = sns.color_palette("pastel", 5)
    for k, (a, b) in enumerate(zip(stages.bounds[:-1], stages.bounds[1:])):
        for ax in axes:
            ax.axvspan(a, max(b, a + 1), color=palette[k], alpha=0.5, lw=0)
        ax_loss.annotate(f"{k + 1}", ((a + b) / 2, 1.02), xycoords=("data", "axes fraction"),
                         ha="center", va="bottom", fontweight="bold")
    notes = ((ax_loss, "the loss spikes once the instability has grown (stage 4)", "top"),
             (ax_v, "$g^2 \\ll v$: $v$ stops tracking $g^2$ and decays like $\\beta_2^t$", "top"),
             (ax_lam, "$\\lambda_{\\max}(\\hat H)$ rises as $v$ decays; $\\lambda_{\\max}(H)$ stays put",
              "bottom"))
    for ax, text, where in notes:
        ax.text(0.99 if where == "bottom" else 0.01, 0.04 if where == "bottom" else 0.96, text,
                transform=ax.transAxes, va=where, ha="right" if where == "bottom" else "left",
                fontsize="small", bbox=dict(facecolor="white", alpha=0.85, lw=0))
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[k], alpha=0.5) for k in range(5)]
    fig.legend(handles, [f"{k + 1}: {n}" for k, n in enumerate(STAGE_NAMES)], ncol=5,
               loc="lower center", fontsize="x-small", frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_seed_verdicts(table, names, ax=None):
    """One column per seed, one row per verdict: green where it held, red where not, grey
    where the seed had no spike; the number of spikes is written above each column."""
    import matplotlib.colors as mcolors

    ax = ax or plt.gca()
    spiked = table["n_spikes"].to_numpy() > 0
    grid = np.array([[(1.0 if bool(v) else 0.0) if ok else np.nan
                      for v, ok in zip(table[n].fillna(False), spiked)] for n in names])
    cmap = mcolors.ListedColormap(["#d62728", "#2ca02c"])
    cmap.set_bad("#cccccc")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize="small")
    ax.set_xticks(range(len(table)), table["seed"].astype(int), fontsize="small")
    ax.set_xlabel("seed (number above: spikes)")
    for k, n in enumerate(table["n_spikes"]):
        ax.text(k, -0.6, str(int(n)), ha="center", va="bottom", fontsize="x-small")
    ax.set_ylim(len(names) - 0.5, -0.9)
    ax.set_title("verdict per seed (green: holds, red: does not)", fontsize="small")
    ax.grid(False)
    return ax


def plot_fork(base, results: dict, fork: int, lr: float,
              branches=("control", "v_floor", "d_frozen", "eps_raised"), before: int = 150):
    """One fork: the loss (top) and λ_max(Ĥ) against 2/η (bottom) of each named branch from
    the fork after update ``fork`` of ``base``, with ``before`` steps of the original run."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    history = base.metrics[(base.metrics["step"] > fork - before) & (base.metrics["step"] <= fork)]
    top.semilogy(history["step"], history["loss"], color="0.5", lw=1.2, label="before the fork")
    tracked = history.dropna(subset=["lambda_max_pre"])
    bottom.plot(tracked["step"], tracked["lambda_max_pre"], color="0.5", lw=1.2)
    for name in branches:
        m = results[name].metrics
        top.semilogy(m["step"], m["loss"], lw=1, label=name.replace("_", " "))
        t = m.dropna(subset=["lambda_max_pre"])
        bottom.plot(t["step"], t["lambda_max_pre"], lw=1, label=name.replace("_", " "))
    for ax in (top, bottom):
        ax.axvline(fork, color="k", ls=":", lw=1)
    return _finish_loss_over_curvature(fig, lr, "step $t$ (dotted: the fork)", "small")


def _finish_loss_over_curvature(fig, lr: float, xlabel: str, fontsize: str):
    """The two panels of a loss (top) over λ_max(Ĥ) (bottom) figure: the 2/η line, log scale,
    labels and legends."""
    top, bottom = fig.axes[:2]
    bottom.axhline(2.0 / lr, color="k", ls="--", lw=1, label=r"$2/\eta$")
    bottom.set_yscale("log")
    top.set_ylabel("training loss (MSE)")
    bottom.set_ylabel(LABELS["lambda_max_pre"])
    bottom.set_xlabel(xlabel)
    legend(top, loc="best", fontsize=fontsize)
    legend(bottom, loc="best", fontsize=fontsize)
    fig.tight_layout()
    return fig


def plot_spike_rates(rates, ax=None):
    """Share of forks in which each branch spiked (rows) at each lag (columns), from
    :func:`utils.studies.interventions.spike_rates`, annotated with the share and the forks."""
    ax = ax or plt.gca()
    share = rates["spike_rate"].unstack("lag")
    forks = rates["forks"].unstack("lag")
    labels = share.map(lambda x: f"{x:.2f}" if x == x else "") + "\n(" + forks.map(
        lambda n: f"{int(n)}" if n == n else "") + ")"
    sns.heatmap(share, vmin=0, vmax=1, cmap="RdYlGn_r", annot=labels.to_numpy(), fmt="",
                annot_kws={"fontsize": "x-small"}, cbar_kws={"label": "share of forks that spiked"},
                ax=ax)
    ax.set_xlabel("fork taken at")
    ax.set_ylabel("branch")
    ax.tick_params(axis="x", rotation=15)
    return ax


def plot_architecture_effects(effects, labels: dict | None = None, ax=None):
    """The share of early forks in which each branch prevented the spike, with its 95 %
    interval, one group of points per architecture (from :func:`utils.studies.interventions.
    architecture_effects`); ``labels``: branch -> legend label."""
    ax = ax or plt.gca()
    archs = list(dict.fromkeys(effects.index.get_level_values("architecture")))
    branches = list(dict.fromkeys(effects.index.get_level_values("branch")))
    colors = dict(zip(branches, sns.color_palette("colorblind", len(branches))))
    width = 0.6 / max(len(branches), 1)
    for j, branch in enumerate(branches):
        for i, arch in enumerate(archs):
            if (arch, branch) not in effects.index:
                continue
            row = effects.loc[(arch, branch)]
            x = i + (j - (len(branches) - 1) / 2) * width
            share = row["share_prevented"]
            ax.errorbar([x], [share], yerr=[[share - row["ci95_low"]], [row["ci95_high"] - share]],
                        fmt="o", color=colors[branch], capsize=3,
                        label=(labels or {}).get(branch, branch) if i == 0 else None)
            ax.annotate(f"{int(row['forks'])}", (x, row["ci95_high"]), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize="x-small")
    ax.set_xticks(range(len(archs)), archs)
    ax.set_ylim(-0.05, 1.1)
    ax.set_ylabel("share of forks prevented")
    ax.set_xlabel("architecture (forks ≥ 10 steps before the crossing; their count above)")
    legend(ax, fontsize="small")
    return ax


def plot_precision_recall(curves, axes=None, signals=None, chance=None):
    """One panel per (architecture, setting): each signal's pooled precision against recall as
    its threshold varies (from :func:`utils.studies.predictors.pr_curves`), its default threshold
    marked by a larger dot; ``chance`` (setting -> precision of random alarms) as a dotted
    line."""
    settings = list(dict.fromkeys(zip(curves["architecture"], curves["setting"])))
    if axes is None:
        _, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings) + 1.5, 3.6),
                               sharey=True, squeeze=False)
        axes = axes[0]
    signals = signals or list(dict.fromkeys(curves["signal"]))
    palette = dict(zip(signals, sns.color_palette("tab20", len(signals))))
    top = max(0.3, 1.1 * float(curves["precision"].max()))
    styles = ["-", "--", ":", "-."]
    for ax, key in zip(axes, settings):
        sub = curves[(curves["architecture"] == key[0]) & (curves["setting"] == key[1])]
        for i, name in enumerate(signals):
            g = sub[sub["signal"] == name].sort_values("threshold")
            ax.plot(g["recall"], g["precision"], styles[i % 4], marker="o", ms=2.5, lw=1,
                    color=palette[name], label=name)
            if "default" in g:
                d = g[g["default"].astype(bool)]
                ax.plot(d["recall"], d["precision"], "o", ms=6, color=palette[name])
        if chance is not None and key in chance:
            ax.axhline(chance[key], color="k", ls=":", lw=1, label="chance precision")
        ax.set_title(f"{key[0]}, {key[1]}", fontsize="small")
        ax.set_xlabel("recall")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.01, top)
    axes[0].set_ylabel("precision")
    legend(axes[-1], loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="x-small")
    return axes


def plot_lead_times(table, ax=None):
    """The lead of each warned spike (steps from the first alarm within the horizon to the
    start), one box per signal and setting, from rows of the predictors sweep."""
    import pandas as pd

    from utils.studies.scoring import lead_lists

    ax = ax or plt.gca()
    leads = pd.DataFrame([{"signal": r.signal, "setting": f"{r.architecture}, {r.setting}",
                           "lead": x}
                          for r, row in zip(table.itertuples(), lead_lists(table["leads"]))
                          for x in row])
    if len(leads):
        sns.boxplot(data=leads, y="signal", x="lead", hue="setting", ax=ax, fliersize=1.5,
                    linewidth=0.8)
    ax.set_xlabel("lead: steps from the first alarm to the spike's start")
    ax.set_ylabel("")
    legend(ax, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def plot_signal_timeline(metrics, spikes, lr: float, alarms: dict, axes=None):
    """A run's loss (top), λ_grad(Ĥ), λ_max(Ĥ) and the secant estimate against 2/η (middle),
    and each signal's alarms as ticks (bottom; ``alarms``: name -> boolean per row)."""
    if axes is None:
        _, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True,
                               gridspec_kw={"height_ratios": [2, 2, 0.3 * len(alarms) + 0.6]})
    plot_loss(metrics, spikes, ax=axes[0])
    steps = metrics["step"].to_numpy()
    if "secant" in metrics:
        axes[1].plot(steps, metrics["secant"], lw=0.6, color="0.6", label="secant estimate")
    plot_curvature(metrics, lr, columns=("lambda_max_pre", "lambda_grad_pre"), spikes=spikes,
                   ax=axes[1])
    for i, (name, fired) in enumerate(alarms.items()):
        axes[2].plot(steps[np.asarray(fired, dtype=bool)], np.full(int(np.sum(fired)), i), "|",
                     ms=7)
    mark_spikes(axes[2], spikes, label=False)
    axes[2].set_yticks(range(len(alarms)), list(alarms), fontsize="x-small")
    axes[2].set_ylim(-0.7, len(alarms) - 0.3)
    axes[2].set_xlabel("step $t$")
    return axes


def plot_phase(grid, fit=None, reference=None, share=None, ax=None, title: str = ""):
    """A phase diagram: δ = 1 − β1 (x) against γ = 1 − β2 (y), both log, each grid point
    coloured spiky or calm (or, with ``share`` (nδ, nγ), by the share of seeds that spiked);
    the fitted boundary ``fit`` (:class:`utils.studies.phase.BoundaryFit`, its boundary points as
    dots) and ``reference`` boundaries (label -> (C, p)) drawn over it."""
    ax = ax or plt.gca()
    d, g = np.log10(grid.deltas), np.log10(grid.gammas)

    def edges(x):
        mid = (x[1:] + x[:-1]) / 2
        return 10 ** np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])

    values = (grid.spiky.astype(float) if share is None else np.asarray(share, dtype=float)).T
    mesh = ax.pcolormesh(edges(d), edges(g), values, cmap="RdYlBu_r", vmin=0, vmax=1,
                         shading="flat")
    plt.colorbar(mesh, ax=ax, label="spiky" if share is None else "share of seeds spiky")
    x = np.geomspace(grid.deltas[0], grid.deltas[-1], 100)
    if fit is not None:
        ax.plot(fit.deltas, fit.gammas, "ko", ms=3)
        ax.plot(x, fit.gamma(x), "k-", lw=1.5,
                label=f"our fit: γ = {fit.C:.3g} δ^{fit.p:.2f}")
    for (label, (c, p)), style in zip((reference or {}).items(), ["--", ":"]):
        ax.plot(x, c * x ** p, "k" + style, lw=1.2, label=f"{label}: γ = {c:g} δ^{p:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(edges(d)[0], edges(d)[-1])
    ax.set_ylim(edges(g)[0], edges(g)[-1])
    ax.set_xlabel(r"$\delta = 1 - \beta_1$")
    ax.set_ylabel(r"$\gamma = 1 - \beta_2$")
    ax.set_title(title, fontsize="small")
    legend(ax, fontsize="x-small", loc="lower right")
    return ax


def plot_method_runs(results: dict, lr: float, labels: dict | None = None):
    """Runs of one model under several methods (name -> RunResult): the loss with each run's
    spikes marked (top) and λ_max(Ĥ) against 2/η where the method has Adam's D (bottom)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    colors = sns.color_palette("tab10", len(results))
    for color, (name, result) in zip(colors, results.items()):
        label = (labels or {}).get(name, name)
        m = result.metrics
        top.semilogy(m["step"], m["loss"], lw=1, color=color,
                     label=f"{label} ({len(result.spikes)} spikes)")
        for s in result.spikes:
            top.plot(s.start, m["loss"].iloc[s.start - 1], "v", color=color, ms=5)
        if "lambda_max_pre" in m:
            t = m.dropna(subset=["lambda_max_pre"])
            bottom.plot(t["step"], t["lambda_max_pre"], lw=1, color=color, label=label)
    return _finish_loss_over_curvature(fig, lr, "step $t$ (triangles: spike starts)", "x-small")


def plot_mitigation_tradeoff(relative, labels: dict, axes=None):
    """One panel per architecture: each method's share of Adam's spikes removed (x) against
    its median final loss over Adam's (y, log), with the 95 % intervals over seeds, from
    :func:`utils.studies.mitigations.relative_to_baseline`."""
    archs = list(dict.fromkeys(relative.index.get_level_values("architecture")))
    if axes is None:
        _, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 4.2), sharey=True)
    colors = dict(zip(labels, sns.color_palette("tab20", len(labels))))
    for ax, arch in zip(np.atleast_1d(axes), archs):
        g = relative.xs(arch, level="architecture")
        for method, row in g.iterrows():
            x = 1 - row["spike_ratio"]
            xerr = [[max(x - (1 - row["spike_ratio_high"]), 0)],
                    [max((1 - row["spike_ratio_low"]) - x, 0)]]
            y = row["loss_ratio"]
            yerr = [[max(y - row["loss_ratio_low"], 0)],
                    [max(min(row["loss_ratio_high"], 1e6) - y, 0)]]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=5, capsize=2, lw=0.8,
                        color=colors.get(method), label=labels.get(method, method))
        ax.axhline(1, color="0.4", lw=0.8, ls=":")
        ax.axvline(0, color="0.4", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("share of Adam's spikes removed")
        ax.set_title(arch)
    np.atleast_1d(axes)[0].set_ylabel("median final loss / Adam's")
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    np.atleast_1d(axes)[0].figure.legend(handles, names, loc="lower center", ncol=6,
                                         fontsize="x-small", frameon=False)
    np.atleast_1d(axes)[0].figure.tight_layout(rect=(0, 0.1, 1, 1))
    return axes


def plot_best_loss(curves, target: float, labels: dict, ax=None, title: str = ""):
    """The median over seeds of each method's best loss so far (columns of ``curves``, from
    :func:`utils.studies.mitigations.median_curves`) against step, with the target loss."""
    ax = ax or plt.gca()
    colors = dict(zip(labels, sns.color_palette("tab20", len(labels))))
    for method in curves:
        ax.semilogy(curves.index, curves[method], lw=1.2, color=colors.get(method),
                    label=labels.get(method, method), ls="-" if method == "adam" else "--"
                    if method.startswith(("eps", "beta2")) else "-.")
    ax.axhline(target, color="k", lw=1, ls=":", label="target (2 × Adam's final loss)")
    ax.set_xlabel("step $t$")
    ax.set_ylabel("best loss so far (median of seeds)")
    ax.set_title(title)
    return ax


def plot_watched_run(events, spikes: list[Spike], alarms: dict, axes=None):
    """A monitored run read back from its log (``events``: one row per step with the columns
    ``step``, ``loss``, ``threshold`` (2/η at that step), ``lambda_grad_pre_a``, ``secant`` and
    ``g2_over_v_median``, and ``eval_loss`` where the spikes were found on it): the losses with
    the spikes shaded (top); the paper's λ_grad(Ĥ) on the measured steps and the secant
    estimate, in units of each step's 2/η so that the threshold is the line at 1 through the
    warm-up (second; clipped to [−3, 10]: single mini-batch values reach far beyond); the
    median of g²/v (third); each signal's alarms as ticks (bottom; ``alarms``: name -> boolean
    per row)."""
    if axes is None:
        _, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True,
                               gridspec_kw={"height_ratios": [2, 2, 1.2,
                                                              0.3 * len(alarms) + 0.6]})
    steps = events["step"].to_numpy()
    if "eval_loss" in events:
        axes[0].semilogy(steps, events["loss"].to_numpy(dtype=float), lw=0.5, color="0.65",
                         label="training loss (each step's batch)")
        plot_loss(events.assign(loss=events["eval_loss"]), spikes, ax=axes[0],
                  label="evaluation loss (fixed batch)")
        legend(axes[0], fontsize="x-small", loc="upper right")
    else:
        plot_loss(events, spikes, ax=axes[0])
    axes[0].set_xlabel("")
    axes[0].set_ylabel("loss\n(nats per character)")
    scale = 1 / events["threshold"].to_numpy(dtype=float)
    secant = events["secant"].to_numpy(dtype=float) * scale
    axes[1].plot(steps, secant, lw=0.5, color="0.6", label="secant estimate (every step)")
    lam = events["lambda_grad_pre_a"]
    measured = lam.notna().to_numpy()
    axes[1].plot(steps[measured], (lam.to_numpy(dtype=float) * scale)[measured],
                 ".-", ms=2.5, lw=0.8, color="tab:blue", label=PAPER_GRAD)
    axes[1].axhline(1, color="k", ls="--", lw=1, label=r"$2/\eta$")
    top = max(3.0, float(np.nanpercentile(secant, 99)) if np.isfinite(secant).any() else 3.0)
    axes[1].set_ylim(-3, min(top, 10))
    axes[1].set_ylabel(r"curvature $\times\,\eta/2$")
    legend(axes[1], loc="upper left", fontsize="x-small", ncol=3)
    mark_spikes(axes[1], spikes, label=False)
    g2 = events["g2_over_v_median"].notna().to_numpy()
    axes[2].semilogy(steps[g2], events["g2_over_v_median"].to_numpy(dtype=float)[g2], lw=0.8,
                     color="tab:green")
    axes[2].axhline(1, color="0.4", lw=0.8, ls=":")
    axes[2].set_ylabel(r"median $g^2/v$")
    mark_spikes(axes[2], spikes, label=False)
    for i, (name, fired) in enumerate(alarms.items()):
        fired = np.asarray(fired, dtype=bool)
        axes[3].plot(steps[fired], np.full(int(fired.sum()), i), "|", ms=7)
    mark_spikes(axes[3], spikes, label=False)
    axes[3].set_yticks(range(len(alarms)), list(alarms), fontsize="x-small")
    axes[3].set_ylim(-0.7, len(alarms) - 0.3)
    axes[3].set_xlabel("step $t$")
    return axes


def plot_quadratic_figure2(fig2: dict, gd, fit: tuple[float, float], k: int = 0):
    """The paper's Figure 2 on our runs (starting point ``k``): (a) Adam's loss at each η and
    GD's, (b) √v̂ at the spike's start against η with our fit and the paper's 0.021 η^1.03,
    (c) η/√v̂ against the step with 2(1+β1)/(1−β1). ``fig2``: η -> QuadraticRuns
    (:mod:`utils.studies.quadratic`); ``fit``: (C, p) of our fit."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax_a, ax_b, ax_c = axes
    ax_a.semilogy(gd.steps, gd.loss[:, k], "k--", lw=1, label=f"GD η = {gd.lr:g}")
    points = []
    for lr in sorted(fig2, reverse=True):
        runs = fig2[lr]
        summary = trajectory_summary(runs, k)
        line, = ax_a.semilogy(runs.steps, runs.loss[:, k], lw=1, label=f"Adam η = {lr:g}")
        ax_c.semilogx(runs.steps, lr / np.sqrt(runs.v_hat[:, k]), lw=1, color=line.get_color(),
                      label=f"η = {lr:g}")
        points.append((lr, summary["sqrt_v_at_spike"], line.get_color()))
    beta1 = next(iter(fig2.values())).beta1
    limit = 2 * (1 + beta1) / (1 - beta1)
    ax_a.set(xlabel="step $t$", ylabel=r"loss $\theta^2/2$", title="(a) loss")
    legend(ax_a, fontsize="x-small")
    lrs = np.array(sorted(fig2))
    for lr, value, color in points:
        ax_b.loglog(lr, value, "o", color=color)
    ax_b.loglog(lrs, fit[0] * lrs ** fit[1], "k-", lw=1,
                label=f"ours: {fit[0]:.3f} η^{fit[1]:.2f}")
    ax_b.loglog(lrs, 0.021 * lrs ** 1.03, "k:", lw=1, label="the paper: 0.021 η^1.03")
    ax_b.set(xlabel=r"step size $\eta$", ylabel=r"$\sqrt{\hat v_t}$ at the spike's start",
             title=r"(b) $\sqrt{\hat v}$ at the spike")
    legend(ax_b, fontsize="x-small")
    ax_c.axhline(limit, color="k", ls="--", lw=1,
                 label=rf"$2(1+\beta_1)/(1-\beta_1) = {limit:g}$ (i.e. $\lambda_{{\max}}(\hat H) = 2/\eta$)")
    ax_c.set_yscale("log")
    ax_c.set(xlabel="step $t$", ylabel=r"$\eta/\sqrt{\hat v_t}$", title=r"(c) $\eta/\sqrt{\hat v_t}$")
    ax_c.set_ylim(top=ax_c.get_ylim()[1] * 30)   # room for the legend above the curves
    legend(ax_c, fontsize="x-small", loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def plot_quadratic_figure3(fig3: dict, k: int = 0):
    """The paper's Figure 3 on our runs: for each β2 (columns), the loss and |g| (top) and
    v̂_t with its fitted decay A α^t and λ_max(Ĥ_t) against 2/η (bottom). ``fig3``: β2 ->
    QuadraticRuns."""
    betas = sorted(fig3, reverse=True)
    fig, axes = plt.subplots(2, len(betas), figsize=(6.5 * len(betas), 6.5), squeeze=False)
    for col, beta2 in enumerate(betas):
        runs = fig3[beta2]
        s = trajectory_summary(runs, k)
        top, bottom = axes[0, col], axes[1, col]
        top.semilogy(runs.steps, runs.loss[:, k], lw=1, label="training loss")
        top.semilogy(runs.steps, runs.grad[:, k], lw=1, color="tab:green", label=r"$|g_t|$")
        top.set(xlabel="step $t$", title=rf"$\beta_2 = {beta2:g}$: loss and gradient")
        v = runs.v_hat[:, k]
        bottom.semilogy(runs.steps, v, color="tab:red", lw=1, label=r"$\hat v_t$")
        t_min = s["t_min"]
        first = max(1, t_min // 2)
        alpha = decay_rate(v, first, t_min)
        t = np.arange(first, t_min + 1)
        if np.isfinite(alpha):
            fit_a = v[t_min - 1] / alpha ** t_min
            bottom.semilogy(t, fit_a * alpha ** t, "g--", lw=1.5,
                            label=rf"fit $A\alpha^t$, $\alpha = {alpha:.3f}$")
        bottom.set(xlabel="step $t$", ylabel=r"$\hat v_t$")
        twin = bottom.twinx()
        twin.semilogy(runs.steps, runs.lambda_max_pre[:, k], color="tab:blue", lw=1,
                      label=r"$\lambda_{\max}(\hat H_t)$")
        twin.axhline(runs.threshold, color="k", ls="--", lw=1, label=r"$2/\eta$")
        twin.set_ylabel(r"$\lambda_{\max}(\hat H_t)$")
        for ax in (top, bottom):
            if np.isfinite(s["spike_start"]):
                ax.axvline(s["spike_start"], color="tab:red", ls=":", lw=1)
                ax.axvline(s["spike_peak"], color="tab:blue", ls=":", lw=1)
        legend(top, fontsize="x-small")
        handles = bottom.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        bottom.legend(handles[0] + more[0], handles[1] + more[1], fontsize="x-small",
                      loc="center right")
    fig.tight_layout()
    return fig


def plot_quadratic_d2(d2: dict, k: int = 0):
    """The paper's Figure D2 on our runs: for each (η, β1, β2) (columns), the loss (top) and
    λ_max(Ĥ_t) against 2/η (bottom), the spike's start marked. ``d2``: setting -> QuadraticRuns."""
    fig, axes = plt.subplots(2, len(d2), figsize=(3.4 * len(d2), 5.2), squeeze=False,
                             sharex="col")
    for col, (setting, runs) in enumerate(d2.items()):
        s = trajectory_summary(runs, k)
        top, bottom = axes[0, col], axes[1, col]
        top.semilogy(runs.steps, runs.loss[:, k], lw=1)
        top.set_title(r"$\eta, \beta_1, \beta_2$ = " + ", ".join(f"{x:g}" for x in setting),
                      fontsize="small")
        bottom.semilogy(runs.steps, runs.lambda_max_pre[:, k], lw=1, color="tab:blue",
                        label=r"$\lambda_{\max}(\hat H_t)$")
        bottom.axhline(runs.threshold, color="k", ls="--", lw=1, label=r"$2/\eta$")
        bottom.set_xlabel("step $t$")
        for ax in (top, bottom):
            if np.isfinite(s["spike_start"]):
                ax.axvline(s["spike_start"], color="tab:red", ls=":", lw=1)
    axes[0, 0].set_ylabel("loss")
    axes[1, 0].set_ylabel(r"$\lambda_{\max}(\hat H_t)$")
    legend(axes[1, 0], fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_figure4(adam, gd):
    """The paper's Figure 4 on our runs: gradient descent's loss (a) and λ_max(H), λ_grad(H)
    against 2/η (b); Adam's loss (c) and λ_max(Ĥ), λ_grad(Ĥ) in the paper's form (A) against
    2/η (d). Spikes shaded from start to peak; the first λ_max crossing after the warm-up
    marked. ``adam``, ``gd``: :class:`~utils.training.runs.RunResult`."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.2), sharex="col")
    panels = ((gd, ("lambda_max_H", "lambda_grad_pre_a"), "GD", ("(a)", "(b)")),
              (adam, ("lambda_max_pre", "lambda_grad_pre_a"), "Adam", ("(c)", "(d)")))
    for col, (result, columns, name, letters) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        lr = result.config.lr
        plot_loss(result.metrics, result.spikes, ax=top, label="training loss")
        top.set_title(f"{letters[0]} {name} (η = {lr:g}): loss")
        labels = {"lambda_grad_pre_a": r"$\lambda_{\rm grad}$" + (r"$(\hat H)$" if name == "Adam"
                                                                   else "$(H)$")}
        m = result.metrics.rename(columns={c: labels.get(c, c) for c in columns})
        plot_curvature(m, lr, columns=[labels.get(c, c) for c in columns],
                       spikes=result.spikes, ax=bottom, log=name == "Adam")
        first = onset_summary(result)["first_max_crossing"]
        for ax in (top, bottom):
            if np.isfinite(first):
                ax.axvline(first, color="tab:purple", ls=":", lw=1.2,
                           label=r"$\lambda_{\max}$ first above $2/\eta$" if ax is top else None)
        legend(top, loc="best", fontsize="x-small")
        bottom.set_title(f"{letters[1]} {name}: curvature")
        bottom.set_ylabel("eigenvalue")
    fig.tight_layout()
    return fig


def plot_figure5(result, remedies: dict):
    """The paper's Figure 5 on our run: (a) the loss and ‖g‖; (b) λ_max(H), λ_max(Ĥ),
    λ_grad(Ĥ) and λ_update(Ĥ) against 2/η; (c) ‖√v̂‖ of each parameter tensor; (d) the cosine
    between consecutive top eigenvectors of H and between g and that eigenvector; (e) panel (b)
    around the first spike; (f) the loss with the paper's remedies (``remedies``: name ->
    RunResult of :func:`utils.studies.crossing.remedy_runs`)."""
    m, spikes, lr = result.metrics, result.spikes, result.config.lr
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.2))
    (a, b, c), (d, e, f) = axes
    plot_loss(m, spikes, ax=a, label="training loss")
    a.semilogy(m["step"], m["grad_norm"], lw=1, color="tab:green", label=r"$\Vert g\Vert$")
    a.set_ylabel("loss, gradient norm")
    legend(a, fontsize="x-small")
    a.set_title("(a) loss and gradient norm")
    columns = ("lambda_max_H", "lambda_max_pre", "lambda_grad_pre_a", "lambda_update_pre")
    labels = {"lambda_grad_pre_a": PAPER_GRAD, "lambda_update_pre": r"$\lambda_{\rm update}(\hat H)$"}
    plot_curvature(m, lr, columns=columns, spikes=spikes, ax=b, labels=labels)
    b.set_title(r"(b) eigenvalues against $2/\eta$")
    plot_v_blocks(m, spikes, ax=c, title=r"(c) $\Vert\sqrt{\hat v}\Vert$ per parameter tensor")
    if "cos_top_consecutive_H" in m:
        d.plot(m["step"], m["cos_top_consecutive_H"], lw=1,
               label="top eigenvectors of $H$, consecutive steps")
        d.plot(m["step"], m["cos_grad_top_H"], lw=1, label="$g$ and the top eigenvector of $H$")
    mark_spikes(d, spikes, label=False)
    d.set(xlabel="step $t$", ylabel="|cos|", ylim=(0, 1.05), title="(d) directions")
    legend(d, fontsize="x-small", loc="lower left")
    if spikes:
        s = spikes[0]
        near = m[(m["step"] >= s.start - 40) & (m["step"] <= s.peak + 20)]
        plot_curvature(near, lr, columns=columns, spikes=[s], ax=e, labels=labels)
        e.axvline(s.start, color="tab:red", ls=":", lw=1)
    e.set_title("(e) around the first spike")
    f.semilogy(m["step"], m["loss"], lw=1, color="k", label=r"Adam, $\varepsilon = 10^{-8}$")
    names = {"eps_onset": r"$\varepsilon \to 0.1$ at the spike's onset",
             "eps_start": r"$\varepsilon = 0.1$ from the start",
             "v_clip": r"$v \geq 10^{-2}$ from the start"}
    for name, other in remedies.items():
        f.semilogy(other.metrics["step"], other.metrics["loss"], lw=1, label=names.get(name, name))
    f.set(xlabel="step $t$", ylabel="training loss", title="(f) the paper's remedies")
    legend(f, fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_v_blocks(metrics, spikes: list[Spike] = (), ax=None, weights_only: bool = False,
                  title: str = ""):
    """‖√v̂‖₂ of each parameter tensor (the ``sqrt_v_hat_norm.<name>`` columns, on the steps
    where they were measured; only the weights with ``weights_only``) against step, log scale."""
    ax = ax or plt.gca()
    for col in [k for k in metrics if k.startswith("sqrt_v_hat_norm.")
                and (k.endswith("weight") or not weights_only)]:
        sub = metrics.dropna(subset=[col])
        ax.semilogy(sub["step"], sub[col], lw=1, label=col.removeprefix("sqrt_v_hat_norm."))
    mark_spikes(ax, spikes, label=False)
    ax.set(xlabel="step $t$", ylabel=r"$\Vert\sqrt{\hat v}\Vert_2$", title=title)
    legend(ax, fontsize="x-small")
    return ax


def plot_figure6(result):
    """The paper's Figure 6 on our run: (a) the loss; (b) λ_max(H), λ_max(Ĥ) and λ_grad(Ĥ)
    (form A) against 2/η; (c) ‖g‖ and ‖√v̂‖ over all parameters (the paper: ‖g‖² per block);
    (d) ‖√v̂‖ of each weight tensor; (e) the gradient's alignment with Ĥ's top direction."""
    m, spikes, lr = result.metrics, result.spikes, result.config.lr
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.2))
    (a, b, c), (d, e, f) = axes
    f.remove()
    plot_loss(m, spikes, ax=a, label="training loss")
    a.set_title("(a) loss")
    plot_curvature(m, lr, columns=("lambda_max_H", "lambda_max_pre", "lambda_grad_pre_a"),
                   spikes=spikes, ax=b, labels={"lambda_grad_pre_a": PAPER_GRAD})
    b.set_title(r"(b) eigenvalues against $2/\eta$")
    tracked = m.dropna(subset=["sqrt_v_hat_norm"]) if "sqrt_v_hat_norm" in m else m.iloc[:0]
    c.semilogy(m["step"], m["grad_norm"], lw=1, color="tab:green", label=r"$\Vert g\Vert$")
    c.semilogy(tracked["step"], tracked["sqrt_v_hat_norm"], lw=1, color="tab:purple",
               label=r"$\Vert\sqrt{\hat v}\Vert$")
    mark_spikes(c, spikes, label=False)
    c.set(xlabel="step $t$", ylabel="norm", title=r"(c) $\Vert g\Vert$ against $\Vert\sqrt{\hat v}\Vert$")
    legend(c, fontsize="x-small")
    plot_v_blocks(m, spikes, ax=d, weights_only=True,
                  title=r"(d) $\Vert\sqrt{\hat v}\Vert$ per weight tensor")
    if "cos_grad_top_sym" in m:
        plot_alignment(m, spikes, ax=e)
    e.set_title("(e) the gradient against Ĥ's top direction")
    fig.tight_layout()
    return fig


TYPE_COLORS = {"neutral": "tab:gray", "beneficial": "tab:green", "malignant": "tab:orange",
               "catastrophic": "tab:red", "undetermined": "tab:purple"}
"""One colour per kind of spike (:data:`utils.studies.spike_types.TYPES`) in every figure."""


def _floats(text) -> np.ndarray:
    """A space-separated column of the spike-type sweep as floats."""
    return np.array(str(text).split(), dtype=float) if text == text else np.array([])


def plot_train_test(steps, train, test, kinds, ax=None, window: int = WINDOW):
    """Training and test loss (cross-entropy) against step on a log scale; each spike of
    ``kinds`` (rows with ``start``, ``peak``, ``after_step`` and ``type``) shaded from start to
    peak in its kind's colour, and the two windows its kind is judged on hatched lightly."""
    ax = ax or plt.gca()
    ax.semilogy(steps, train, lw=1, color="tab:blue", label="training loss")
    ax.semilogy(steps, test, lw=1, color="tab:orange", label="test loss")
    seen = set()
    for _, k in kinds.iterrows():
        color = TYPE_COLORS.get(k["type"], "k")
        ax.axvspan(k["start"], max(k["peak"], k["start"] + 1), color=color, alpha=0.35, lw=0,
                   label=None if k["type"] in seen else f"spike: {k['type']}")
        seen.add(k["type"])
        for lo in (k["start"] - window, k["after_step"] - window):
            ax.axvspan(lo, lo + window, color=color, alpha=0.1, lw=0)
    ax.set_xlabel("step $t$")
    ax.set_ylabel("loss (cross-entropy)")
    legend(ax, loc="best", fontsize="small")
    return ax


def plot_lambda_grad_traces(rows, ax=None, title: str = ""):
    """λ_grad(Ĥ) (form A, the paper's) over 2/η_t against the step from each spike's start,
    one line per row of the spike-type table (``trace_from``, ``trace_ratio_a``, ``start``,
    ``type``), coloured by kind; 1 is the threshold 2/η."""
    ax = ax or plt.gca()
    seen = set()
    for _, r in rows.iterrows():
        ratio = _floats(r["trace_ratio_a"])
        x = r["trace_from"] + np.arange(len(ratio)) - r["start"]
        ax.semilogy(x, ratio, lw=1, alpha=0.8, color=TYPE_COLORS.get(r["type"], "k"),
                    label=None if r["type"] in seen else r["type"])
        seen.add(r["type"])
    ax.axhline(1.0, color="k", ls="--", lw=1, label=r"$2/\eta$")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("steps from the spike's start")
    ax.set_ylabel(PAPER_GRAD + r" $/\ (2/\eta_t)$")
    if title:
        ax.set_title(title, fontsize="small")
    legend(ax, loc="upper left", fontsize="small")
    return ax


def plot_type_examples(table, every: int = CURVE_EVERY, before: int = 300, axes=None):
    """For each kind of spike in the sweep's ``table``, the first stored run with one: its
    training and test losses (stored every ``every`` steps) from ``before`` steps before the
    start to past the after window, with the spike and its windows shaded."""
    spikes = table[table["kind"] == "spike"]
    kinds = [k for k in TYPE_COLORS if (spikes["type"] == k).any()]
    if axes is None:
        _, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3), squeeze=False)
        axes = axes[0]
    runs = table[table["kind"] == "run"].set_index("seed")
    for ax, kind in zip(axes, kinds):
        k = spikes[spikes["type"] == kind].iloc[0]
        train, test = (_floats(runs.loc[k["seed"], c]) for c in ("curve_train", "curve_test"))
        steps = every * np.arange(1, len(train) + 1)
        keep = (steps >= k["start"] - before) & (steps <= k["after_step"] + 50)
        near = spikes[(spikes["seed"] == k["seed"]) & (spikes["start"] >= k["start"] - before)
                      & (spikes["start"] <= k["after_step"])]
        plot_train_test(steps[keep], train[keep], test[keep], near, ax=ax)
        ax.set_title(f"{kind} (seed {k['seed']})", fontsize="small")
        if ax is not axes[0]:
            ax.set_ylabel("")
    return axes


def plot_type_shares(counts, ax=None):
    """The share of each kind among the determined spikes and among the calm pseudo-spikes
    (:func:`utils.studies.spike_types.type_counts`), side by side."""
    ax = ax or plt.gca()
    shares = counts[["share of spikes", "share of calm"]].dropna()
    n = counts.loc[shares.index, ["spikes", "calm pseudo-spikes"]].sum().astype(int)
    shares.columns = [f"spikes ({n['spikes']})", f"calm pseudo-spikes ({n['calm pseudo-spikes']})"]
    shares.plot.bar(ax=ax, rot=0, color=["tab:blue", "tab:gray"])
    ax.set_ylabel("share of determined labels")
    ax.set_xlabel("")
    ax.set_ylim(0, 1)
    legend(ax, fontsize="small")
    return ax


def plot_sustained_run(metrics, spikes: list[Spike], fits: dict | None = None, axes=None,
                       fit: int = 50):
    """The paper's Figure 7 for one run, three panels over the step: (a) the evaluation loss
    (and each step's batch loss, faint), (b) ‖v̂‖ of each block (``v_norm_<block>`` columns)
    with the fitted decay before each spike (``fits``: spike start -> {block: rate}, drawn
    over the ``fit`` steps before the start), (c) λ_grad(Ĥ) on the step's batch over 2/η_t,
    single (gray) and sustained (orange), with the threshold at 1."""
    from utils.studies.sustained import ratios, sustained_ratio

    if axes is None:
        _, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax = axes[0]
    if "batch_loss" in metrics:
        ax.semilogy(metrics["step"], metrics["batch_loss"], lw=0.5, color="0.7",
                    label="the step's batch")
    ax.semilogy(metrics["step"], metrics["loss"], lw=1, label="evaluation batch")
    mark_spikes(ax, spikes)
    ax.set_ylabel("loss (cross-entropy)")
    legend(ax, loc="upper right", fontsize="small")
    ax = axes[1]
    columns = [c for c in metrics if c.startswith("v_norm_")]
    colors = sns.color_palette("viridis", len(columns))
    for color, col in zip(colors, columns):
        ax.semilogy(metrics["step"], metrics[col], lw=1, color=color,
                    label=col.removeprefix("v_norm_").replace("wv_", "$W_V$ layer "))
        for start, rates in (fits or {}).items():
            rate = rates.get(col.removeprefix("v_norm_"))
            at = metrics.loc[metrics["step"] == start, col]
            if rate is None or not np.isfinite(rate) or not len(at):
                continue
            x = np.arange(start - fit, start + 1)
            ax.semilogy(x, float(at.iloc[0]) * rate ** (x - start), color="k", lw=1.5,
                        ls=":")
    mark_spikes(ax, spikes, label=False)
    ax.set_ylabel(r"$\Vert\hat v_t\Vert_2$")
    legend(ax, fontsize="x-small", ncol=3, loc="lower left")
    ax = axes[2]
    measured = metrics.dropna(subset=["batch_lambda_grad_pre_a"])
    ax.semilogy(measured["step"], np.abs(ratios(measured, "batch_lambda_grad_pre_a")), lw=0.6,
                color="0.5", label=PAPER_GRAD + " (the step's batch)")
    ax.semilogy(measured["step"], np.abs(sustained_ratio(measured, "batch_lambda_grad_pre_a")),
                lw=1, color="tab:orange", label="sustained: min over $t-1, t, t+1$")
    ax.axhline(1.0, color="k", ls="--", lw=1, label=r"$2/\eta_t$")
    mark_spikes(ax, spikes, label=False)
    ax.set(xlabel="step $t$", ylabel=r"$|\cdot|\ /\ (2/\eta_t)$")
    legend(ax, fontsize="x-small", loc="lower left")
    return axes


def plot_signal_scores(scores, labels: dict, ax=None):
    """Pooled precision and recall with their 95 % intervals (``scores``: one row per signal,
    :func:`utils.studies.sustained.score_table`), one pair of points per signal."""
    ax = ax or plt.gca()
    y = np.arange(len(scores))
    for offset, stat, color in ((-0.12, "precision", "tab:blue"), (0.12, "recall", "tab:green")):
        values = scores[stat].to_numpy(dtype=float)
        err = np.array([values - scores[f"{stat}_low"].to_numpy(dtype=float),
                        scores[f"{stat}_high"].to_numpy(dtype=float) - values])
        ax.errorbar(values, y + offset, xerr=np.nan_to_num(err), fmt="o", color=color,
                    capsize=3, label=stat)
    ax.set_yticks(y, [labels.get(s, s) for s in scores.index])
    ax.set(xlim=(-0.02, 1.02), xlabel="pooled over seeds (95 % bootstrap interval)")
    ax.invert_yaxis()
    legend(ax, loc="upper right", fontsize="small")
    return ax
