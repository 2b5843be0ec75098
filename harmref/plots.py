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


def clustering_figure(pooled, model: str, post_position: str):
    """Paper Fig 2: mean clustering score s^l by layer, per behaviour group, at t_inst and t_post-inst.

    `post_position` is the label of t_post-inst (the last captured position, e.g. `post_6`).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, pos, title in ((axes[0], "t_inst", "t_inst"), (axes[1], post_position, f"t_post-inst ({post_position})")):
        sub = pooled[pooled["position"] == pos]
        for g, (color, ls) in GROUP_STYLE.items():
            d = sub[sub["group"] == g].sort_values("layer")
            if len(d):
                ax.plot(d["layer"], d["mean_s"], color=color, ls=ls, marker="o", ms=3, label=f"{g} (n={int(d['n'].iloc[0])})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("layer (residual stream entry)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean s = cos(h, μ_RH) − cos(h, μ_AH)")
    fig.suptitle(f"{model}: clustering by behaviour group (paper Fig 2; RH = refused-harmful, AH = accepted-harmless centroids)", fontsize=10)
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
JAILBREAK_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black")


def jailbreak_figure(groups, model: str):
    """Paper Fig 6: Δharmful (t_inst) vs Δrefuse (t_post-inst) per prompt, behaviour groups and jailbroken prompts.

    groups: rows with `group`, `delta_harmful`, `delta_refuse` (guards.fig6_groups). When Δrefuse is
    undefined (the model refused no training prompt, so there is no refused centroid), Δharmful is
    drawn per group instead.
    """
    import numpy as np

    no_refuse = groups["delta_refuse"].isna().all()
    fig, ax = plt.subplots(figsize=(7 if no_refuse else 9, 5.5))
    names = [g for g in GROUP_STYLE if (groups["group"] == g).any()]
    names += [g for g in groups["group"].unique() if g.startswith("jailbreak")]
    rng = np.random.default_rng(0)
    jb = [g for g in names if g.startswith("jailbreak")]
    style = dict(zip(jb, zip(JAILBREAK_MARKERS, JAILBREAK_COLORS)))
    labels = []
    for k, g in enumerate(names):
        d = groups[groups["group"] == g]
        labels.append(f"{g} (n={len(d)})")
        y = k + rng.uniform(-0.25, 0.25, len(d)) if no_refuse else d["delta_refuse"]
        if g in GROUP_STYLE:
            ax.scatter(d["delta_harmful"], y, s=14, alpha=0.45, color=GROUP_STYLE[g][0], label=labels[-1])
        else:
            marker, color = style[g]
            ax.scatter(d["delta_harmful"], y, s=40, marker=marker, color=color, edgecolor="black", linewidth=0.6,
                       alpha=0.9, label=labels[-1])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("Δharmful at t_inst (≥ 0: Latent Guard says unsafe)")
    if no_refuse:
        ax.set_yticks(range(len(names)), labels)
        ax.set_ylabel("Δrefuse undefined (no training prompt refused): Δharmful per group")
    else:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel("Δrefuse at t_post-inst (≥ 0: refusal belief)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(f"{model}: harmfulness vs refusal belief, jailbreaks (paper Fig 6)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ steering (Figs 4–5)
ARM_COLORS = ["tab:red", "tab:blue", "tab:purple", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive",
              "tab:cyan", "tab:gray", "black", "gold"]


def _no_data(title):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, "no steered generations (see the rule log)", ha="center", va="center")
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _steering_panels(df, metrics, title):
    """Rows = metrics (column, y label), columns = (set, question) cells; one curve per arm."""
    cells = list(dict.fromkeys(zip(df["set"], df["question_id"])))
    if not cells:
        return _no_data(title)
    fig, axes = plt.subplots(len(metrics), len(cells), figsize=(5.2 * len(cells), 2.9 * len(metrics)), squeeze=False, sharex=True)
    for j, (set_name, q) in enumerate(cells):
        cell = df[(df["set"] == set_name) & (df["question_id"].isna() if q is None else df["question_id"] == q)]
        base = cell[cell["arm"] == "baseline"]
        arms = [a for a in dict.fromkeys(cell["arm"]) if a != "baseline"]
        for i, (col, ylabel) in enumerate(metrics):
            ax = axes[i, j]
            for k, arm in enumerate(arms):
                d = cell[(cell["arm"] == arm) & (cell["control"] == "layer_sweep")].sort_values("layer")
                ax.plot(d["layer"], d[col], marker="o", ms=3, color=ARM_COLORS[k % len(ARM_COLORS)], label=arm)
            if len(base) and col in base:
                ax.axhline(float(base[col].iloc[0]), color="black", ls="--", lw=1, label="unsteered")
            if "%" in ylabel:
                ax.set_ylim(-3, 103)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylabel(ylabel)
            if i == 0:
                n = int(base["n"].iloc[0]) if len(base) else int(cell["n"].max())
                ax.set_title(f"{set_name}" + (f", {q}" if q is not None else "") + f" (n={n} per layer)")
            if i == len(metrics) - 1:
                ax.set_xlabel("steered layer l (vector added at the input of decoder layer l)")
        axes[0, j].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def steering_refusal_figure(table, model: str):
    """Paper Fig 4: refusal rate of accepted-harmless prompts by steered layer, one curve per direction."""
    return _steering_panels(
        table.assign(question_id=None),
        [("rate_%", "refusal rate % (substring)"), ("score", "refusal log-odds, 1st token")],
        f"{model}: steering accepted harmless prompts toward refusal (paper Fig 4)",
    )


def reply_inversion_figure(table, model: str):
    """Paper Fig 5: "No" rate by steered layer per direction, harmless and harmful prompts."""
    return _steering_panels(
        table,
        [("no_%", '"No" % of valid answers'), ("invalid_%", "invalid answers %"),
         ("refusal_text_%", "replies that are refusals %"), ("score", "log P(Certainly) − log P(No), 1st token")],
        f"{model}: reply inversion under steering (paper Fig 5)",
    )


def steering_controls_figure(controls, model: str):
    """Controls at each arm's best layer: coefficient sweep, norm-matched and swapped-scope directions (Δ vs unsteered)."""
    if controls.empty:
        return _no_data(f"{model}: steering controls")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6.5))
    q = controls["question_id"].map(lambda x: f" {x}" if isinstance(x, str) else "")
    controls = controls.assign(key=controls["set"] + q + " · " + controls["arm"] + " @L" + controls["layer"].astype(int).astype(str))
    for k, (key, g) in enumerate(controls[controls["control"] == "coefficient"].groupby("key", sort=False)):
        color = ARM_COLORS[k % len(ARM_COLORS)]
        c0, ref = g["reference_coeff"].iloc[0], g["reference_%"].iloc[0] - g["baseline_%"].iloc[0]
        pts = sorted([*zip(g["coeff"], g["delta_%"]), (c0, ref)])
        ax1.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, color=color, label=key)
        ax1.plot([c0], [ref], marker="*", ms=10, color=color)
    ax1.set_xscale("log", base=2)
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set_xlabel("coefficient c (h + c·v; ★ = the layer sweep's c)")
    ax1.set_ylabel("Δ rate vs unsteered (pp): refusal % (Fig 4) / \"No\" % (Fig 5)")
    ax1.set_title("coefficient sweep at each arm's best layer")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    other = controls[controls["control"].isin(["norm_matched", "scope_swap"])]
    keys = list(dict.fromkeys(other["key"]))
    width = 0.27
    for i, key in enumerate(keys):
        g = other[other["key"] == key]
        ref = g["reference_%"].iloc[0] - g["baseline_%"].iloc[0]
        ax2.barh(i - width, ref, width, color="tab:gray", label="as swept" if i == 0 else None)
        for off, ctl, color in ((0, "norm_matched", "tab:olive"), (width, "scope_swap", "tab:cyan")):
            d = g[g["control"] == ctl]
            if len(d):
                ax2.barh(i + off, float(d["delta_%"].iloc[0]), width, color=color,
                         label=({"norm_matched": "other direction's norm", "scope_swap": "other direction's scope"}[ctl]
                                if ctl not in ax2.get_legend_handles_labels()[1] and i == keys.index(key) else None))
    ax2.set_yticks(range(len(keys)), keys, fontsize=6)
    ax2.axvline(0, color="grey", lw=0.8)
    ax2.set_xlabel("Δ rate vs unsteered (pp)")
    ax2.set_title("norm-matched and swapped-scope controls")
    handles, labels = ax2.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax2.legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.suptitle(f"{model}: steering controls")
    fig.tight_layout()
    return fig


BELIEF_COLORS = {
    "refused · judged harmful": "tab:red",
    "complied · judged harmless": "tab:green",
    "refused · judged harmless": "tab:blue",
    "complied · judged harmful": "tab:orange",
}


def belief_figure(table, rows, model: str, threshold: float = 0.0):
    """Stated belief vs behaviour (issue 17), one row of panels per inversion question (margin verdict, all sets):
    % of prompts whose Δharmful / Δrefuse sign agrees with the stated belief and with the behaviour,
    per (behaviour · stated belief) group, Wilson 95 % bars; and Δharmful vs Δrefuse per prompt."""
    import pandas as pd

    df = pd.DataFrame(rows)
    t = table[(table["verdict"] == "margin") & (table["set"] == "all")]
    questions = list(dict.fromkeys(t["question"]))
    if not questions:
        return _no_data(f"{model}: stated belief vs behaviour")
    groups = list(BELIEF_COLORS)
    fig, axes = plt.subplots(len(questions), 3, figsize=(17, 4.6 * len(questions)), squeeze=False)
    for r, q in enumerate(questions):
        tq = t[t["question"] == q].set_index("group")
        labels = [f"{g}\n(n={int(tq.loc[g, 'n']) if g in tq.index else 0})" for g in groups]
        for c, (name, title) in enumerate((("dh", "Δharmful (t_inst) sign"), ("dr", "Δrefuse (t_post-inst) sign"))):
            ax = axes[r, c]
            for k, (what, color) in enumerate((("belief", "tab:purple"), ("behaviour", "tab:gray"))):
                vals, lo, hi = [], [], []
                for g in groups:
                    row = tq.loc[g] if g in tq.index else None
                    v = float(row[f"{name}_{what}_%"]) if row is not None and row[f"{name}_n_scored"] else float("nan")
                    vals.append(v)
                    lo.append(v - float(row[f"{name}_{what}_lo_%"]) if v == v else 0.0)
                    hi.append(float(row[f"{name}_{what}_hi_%"]) - v if v == v else 0.0)
                x = [i + (k - 0.5) * 0.38 for i in range(len(groups))]
                ax.bar(x, vals, 0.38, yerr=[lo, hi], capsize=3, color=color,
                       label="agrees with the stated belief" if what == "belief" else "agrees with the behaviour")
                for xi, v, g in zip(x, vals, groups):
                    if v == v:
                        row = tq.loc[g]
                        ax.text(xi, 2, f"{int(row[f'{name}_{what}_k'])}/{int(row[f'{name}_n_scored'])}",
                                ha="center", fontsize=6, color="white")
            ax.axvline(1.5, color="black", lw=0.8, ls=":")
            ax.set_xticks(range(len(groups)), labels, fontsize=7)
            ax.set_ylim(0, 105)
            ax.set_ylabel("% of the group's prompts")
            ax.set_title(f"{q}: {title}  (agreeing groups | disagreements)", fontsize=9)
            ax.legend(fontsize=7, loc="lower left")
        ax = axes[r, 2]
        dq = df[df["question"] == q]
        for g in groups:
            d = dq[dq["group"] == g]
            ax.scatter(d["delta_harmful"], d["delta_refuse"], s=9, alpha=0.7, color=BELIEF_COLORS[g], label=f"{g} ({len(d)})")
        ax.axvline(threshold, color="grey", lw=0.8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel(f"Δharmful (≥ {threshold:g} reads harmful)")
        ax.set_ylabel("Δrefuse (≥ 0 reads refuse)")
        ax.set_title(f"{q}: per prompt, coloured by behaviour · stated belief", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{model}: the model's stated belief (reply inversion, first-token margin) vs its behaviour and latent beliefs")
    fig.tight_layout()
    return fig
