"""Figures: functions take tidy DataFrames and return a matplotlib Figure; scripts save them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUP_STYLE = {
    "refused-harmful": ("tab:red", "-"),
    "accepted-harmless": ("tab:green", "-"),
    "accepted-harmful": ("tab:orange", "--"),
    "refused-harmless": ("tab:blue", "--"),
}


def clustering_figure(pooled, model: str, positions=("t_inst", None)):
    """Paper Fig 2: mean clustering score s^l by layer, per behaviour group, at t_inst and t_post-inst."""
    post = pooled["position"].unique()[-1] if positions[1] is None else positions[1]
    post_label = [p for p in pooled["position"].unique()][-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, pos, title in ((axes[0], positions[0], "t_inst"), (axes[1], post_label, "t_post-inst")):
        sub = pooled[pooled["position"] == pos]
        for g, (color, ls) in GROUP_STYLE.items():
            d = sub[sub["group"] == g].sort_values("layer")
            if len(d):
                ax.plot(d["layer"], d["mean_s"], color=color, ls=ls, marker="o", ms=3, label=f"{g} (n={int(d['n'].iloc[0])})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{title}")
        ax.set_xlabel("layer (residual stream entry)")
        ax.set_ylabel("mean s = cos(h, μ_refused-harmful) − cos(h, μ_accepted-harmless)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{model}: clustering by behaviour group (paper Fig 2)")
    fig.tight_layout()
    return fig


def cosine_figure(cos, model: str):
    """Cosine between harmfulness and refusal directions by layer, same and across positions."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for col, label in (
        ("cos_harm_inst__refusal_post", "harm@t_inst vs refusal@t_post (paper)"),
        ("cos_harm_post__refusal_post", "harm vs refusal, both @t_post"),
        ("cos_harm_inst__refusal_inst", "harm vs refusal, both @t_inst"),
        ("cos_harm_inst__harm_post", "harm@t_inst vs harm@t_post (position control)"),
    ):
        ax.plot(cos["layer"], cos[col], marker="o", ms=3, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine")
    ax.set_title(f"{model}: harmfulness vs refusal direction")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def positions_figure(table, model: str, layers):
    """App. F (Fig 14): mean s over the middle layers at each position, per misbehaving group."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(table))
    for g in ("accepted-harmful", "refused-harmless"):
        if g in table:
            color, _ = GROUP_STYLE[g]
            ax.plot(list(x), table[g], marker="o", color=color, label=g)
    ax.set_xticks(list(x), table["position"], rotation=45, ha="right")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(f"mean s over layers {layers[0]}–{layers[1]}")
    ax.set_title(f"{model}: which position carries harmfulness? (paper Fig 14)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_figure(acc, model: str):
    """Held-out accuracy of the centroid rule by layer at t_inst and t_post-inst."""
    per = acc[acc["layer"].apply(lambda x: isinstance(x, int))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(per["layer"], per["acc_inst"], marker="o", ms=3, label="t_inst")
    ax.plot(per["layer"], per["acc_post"], marker="o", ms=3, label="t_post-inst")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy (harmful vs harmless)")
    ax.set_title(f"{model}: centroid rule cos(h, μ_harmful) − cos(h, μ_harmless) ≥ 0")
    ax.legend()
    fig.tight_layout()
    return fig


JAILBREAK_MARKERS = ("^", "s", "D", "P", "X", "v")


def jailbreak_figure(groups, model: str):
    """Paper Fig 6: Δharmful (t_inst) vs Δrefuse (t_post-inst) per prompt, behaviour groups and jailbroken prompts.

    groups: rows with `group`, `delta_harmful`, `delta_refuse` (guards.fig6_groups).
    """
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for g, (color, _) in GROUP_STYLE.items():
        d = groups[groups["group"] == g]
        if len(d):
            ax.scatter(d["delta_harmful"], d["delta_refuse"], s=14, alpha=0.45, color=color, label=f"{g} (n={len(d)})")
    jb = [g for g in groups["group"].unique() if g.startswith("jailbreak")]
    for g, marker in zip(jb, JAILBREAK_MARKERS):
        d = groups[groups["group"] == g]
        ax.scatter(d["delta_harmful"], d["delta_refuse"], s=40, marker=marker, edgecolor="black", linewidth=0.6,
                   alpha=0.9, label=f"{g} (n={len(d)})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("Δharmful at t_inst (≥ 0: Latent Guard says unsafe)")
    ax.set_ylabel("Δrefuse at t_post-inst (≥ 0: refusal belief)")
    ax.set_title(f"{model}: harmfulness vs refusal belief, jailbreaks (paper Fig 6)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
