"""Figures: functions take tidy DataFrames and return a matplotlib Figure; scripts save them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .tables import wilson  # noqa: E402


GROUP_STYLE = {
    "refused-harmful": ("tab:red", "-"),
    "accepted-harmless": ("tab:green", "-"),
    "accepted-harmful": ("tab:orange", "--"),
    "refused-harmless": ("tab:blue", "--"),
}


def clustering_figure(pooled, model: str, post_position: str, paper=None):
    """Paper Fig 2: mean clustering score s^l by layer, per behaviour group, at t_inst and t_post-inst.

    `post_position` is the label of t_post-inst (the last captured position, e.g. `post_6`). Bands: ± 1.96
    SE of each group mean (from the per-prompt SD `sd_s`). `paper`: the paper's values for this model
    ({"t_inst": {group: entry}, "t_post-inst": …}, default: harmref/paper_numbers.yaml), drawn as hatched
    spans (a range) or dotted lines (a value) in the group's colour.
    """
    paper = paper_numbers("fig2", model) if paper is None else paper
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2 if not paper else 5.2))
    for ax, pos, key, title in ((axes[0], "t_inst", "t_inst", "t_inst"),
                                (axes[1], post_position, "t_post-inst", f"t_post-inst ({post_position})")):
        sub = pooled[pooled["position"] == pos]
        for g, entry in (paper.get(key) or {}).items():
            color = GROUP_STYLE.get(g, ("tab:purple", "-"))[0]
            label = paper_label(entry, g, model)
            if "range" in entry:
                ax.axhspan(*entry["range"], facecolor="none", edgecolor=color, hatch="///", lw=0.6, alpha=0.6, label=label)
            else:
                ax.axhline(entry["value"], color=color, ls=":", lw=1.5, label=label)
        for g, (color, ls) in GROUP_STYLE.items():
            d = sub[sub["group"] == g].sort_values("layer")
            if len(d):
                ax.plot(d["layer"], d["mean_s"], color=color, ls=ls, marker="o", ms=3, label=f"{g} (n={int(d['n'].iloc[0])})")
                if "sd_s" in d and d["sd_s"].notna().any():  # ± 1.96 SE of the group mean
                    se = 1.96 * d["sd_s"] / d["n"].pow(0.5)
                    ax.fill_between(d["layer"], d["mean_s"] - se, d["mean_s"] + se, color=color, alpha=0.15, lw=0)
        if "sd_s" in sub and sub["sd_s"].notna().any():
            ax.plot([], [], color="grey", alpha=0.3, lw=6, label="± 1.96 SE of the group mean")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("layer (residual stream entry)")
        ax.set_ylabel("mean s = cos(h, μ_RH) − cos(h, μ_AH)")
        # under the panel, off the curves and below the axis label
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.suptitle(f"{model}: clustering by behaviour group (paper Fig 2; RH = refused-harmful, AH = accepted-harmless centroids)", fontsize=10)
    fig.tight_layout()
    return fig


COSINE_CURVES = (
    # column, label, style: the paper's comparison first, drawn widest so a curve on top of it stays visible
    ("cos_harm_inst__refusal_post", "harm@t_inst vs refusal@t_post-inst (the paper's comparison)", dict(color="tab:red", lw=4.5, alpha=0.45, marker="o", ms=7)),
    ("cos_harm_inst__harm_post", "harm@t_inst vs harm@t_post-inst (position control)", dict(color="black", lw=1.4, ls="--", marker="x", ms=5)),
    ("cos_harm_post__refusal_post", "harm vs refusal, both @t_post-inst", dict(color="tab:blue", lw=1.6, marker="s", ms=3.5)),
    ("cos_harm_inst__refusal_inst", "harm vs refusal, both @t_inst", dict(color="tab:green", lw=1.2, ls=":", marker="^", ms=4)),
)
COINCIDE_TOL = 0.02


def coinciding(cos, columns, tol: float = COINCIDE_TOL) -> dict[str, str]:
    """{column: earlier column it lies on at every layer (|Δ| < tol)}: curves that would hide each other."""
    out = {}
    for i, a in enumerate(columns):
        for b in columns[:i]:
            if b not in out and cos[a].notna().any() and (cos[a] - cos[b]).abs().max() < tol:
                out[a] = b
                break
    return out


def paper_numbers(section: str, model: str) -> dict:
    """The paper's numbers of one figure for `model` (harmref/paper_numbers.yaml); {} for a model not in the paper."""
    from harmref import paper

    return paper.get(section, model)


def paper_label(entry: dict, what: str, model: str, unit: str = "") -> str:
    """Legend text of one paper value: "paper (Llama3-Instruct-8B) harmfulness: 94 % (layer 9), text";
    values read off a plot carry ≈."""
    note = f" ({entry['note']})" if entry.get("note") else ""
    return f"paper ({_paper_name(model)}) {what}: {paper_value(entry, unit)}{note}, {paper_source(entry)}"


def paper_value(entry: dict, unit: str = "") -> str:
    """"≈ 0.06…0.15" / "94 % (layer 9)": one paper value, ≈ when it was read off a plot."""
    v = entry["range"] if "range" in entry else entry["value"]
    num = f"{v[0]:g}…{v[1]:g}" if isinstance(v, (list, tuple)) else f"{v:g}"
    approx = "≈ " if "≈" in entry.get("source", "") else ""
    layer = f" (layer {entry['layer']})" if entry.get("layer") is not None else ""
    return f"{approx}{num}{unit}{layer}"


def paper_source(entry: dict) -> str:
    src = entry.get("source", "")
    return {"P": "paper text", "W": "paper figure", "W≈": "read off the paper's figure", "A": "released tensors"}.get(src, src)


def _paper_name(model: str) -> str:
    from harmref import paper

    return paper.paper_name(model) or model


def _span(v) -> tuple[float, float]:
    """(lo, hi) of a value, a [lo, hi] range or a layer string such as "9–10"."""
    if isinstance(v, (list, tuple)):
        return float(v[0]), float(v[1])
    if isinstance(v, str):
        lo, _, hi = v.replace("-", "–").partition("–")
        return float(lo), float(hi or lo)
    return float(v), float(v)


def _paper_lines(ax, paper, **kw):
    """Horizontal reference lines for the paper's values: [{"y", "label"}]; labels carry ≈ when read off a plot."""
    for k, ref in enumerate(paper or []):
        ax.axhline(ref["y"], color="tab:purple", ls=(0, (4, 2)), lw=1.2, label=ref["label"], **kw)


def cosine_figure(cos, model: str, paper=None):
    """Cosine between harmfulness and refusal directions by layer, same and across positions.

    Each curve has its own colour, line style and marker; a curve within 0.02 of an earlier one at every
    layer says so in the legend (it would otherwise hide under it). `paper`: optional reference values
    [{"y", "label"}] drawn as dashed purple lines.
    """
    if paper is None:
        entry = paper_numbers("cosine", model).get("harmfulness_refusal")
        paper = [{"y": entry["value"], "label": paper_label(entry, "mean cos over layers", model)}] if entry else []
    fig, ax = plt.subplots(figsize=(8, 4.6))
    cols = [c for c, _, _ in COSINE_CURVES if c in cos]
    same = coinciding(cos, cols)
    labels = {c: label for c, label, _ in COSINE_CURVES}
    for z, (col, label, style) in enumerate(COSINE_CURVES):
        if col not in cos:
            continue
        if cos[col].isna().all():
            label += "\n  undefined at every layer (a behaviour group is empty: no refusal direction)"
        elif col in same:
            label += f"\n  = «{labels[same[col]].split(' (')[0]}» at every layer (|Δ| < {COINCIDE_TOL})"
        ax.plot(cos["layer"], cos[col], label=label, zorder=2 + z, **style)
    _paper_lines(ax, paper)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("layer (residual stream entry)")
    ax.set_ylabel("cosine between the two directions")
    ax.set_title(f"{model}: harmfulness vs refusal direction")
    ax.legend(fontsize=7, loc="lower left")
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
    ax.set_xlabel("token position (t_inst−2 … t_inst, then the post-instruction tokens up to t_post-inst)")
    ax.set_ylabel(f"mean s over layers {layers[0]}–{layers[1]}")
    ax.set_title(f"{model}: which position carries harmfulness? (paper Fig 14)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_figure(acc, model: str):
    """Held-out accuracy of the centroid rule by layer at t_inst and t_post-inst."""
    per = acc[acc["layer"].apply(lambda x: isinstance(x, int))]
    fig, ax = plt.subplots(figsize=(7, 4))
    n = int(acc["n"].iloc[0]) if "n" in acc and len(acc) else None
    for col, label, color, ls in (("acc_inst", "t_inst", "tab:blue", "-"), ("acc_post", "t_post-inst", "tab:orange", "--")):
        ax.plot(per["layer"], per[col], marker="o", ms=3, color=color, ls=ls, label=label + (f" (n={n} held out)" if n else ""))
        if n:
            lo, hi = wilson(per[col].astype(float) * n, n)
            ax.fill_between(per["layer"].astype(float), lo, hi, color=color, alpha=0.15, lw=0)
    if n:
        ax.plot([], [], color="grey", alpha=0.3, lw=6, label="Wilson 95 % interval")
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


def jailbreak_figure(groups, model: str, paper=None):
    """Paper Fig 6: Δharmful (t_inst) vs Δrefuse (t_post-inst) per prompt, behaviour groups and jailbroken prompts.

    groups: rows with `group`, `delta_harmful`, `delta_refuse` (guards.fig6_groups). When Δrefuse is
    undefined (the model refused no training prompt, so there is no refused centroid), Δharmful is
    drawn per group instead. `paper`: the paper's ranges per group ({group: {"delta_harmful": entry,
    "delta_refuse": entry}}, default harmref/paper_numbers.yaml, Llama2 only): dashed boxes, or a hatched
    band where only Δrefuse is given.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    paper = paper_numbers("fig6", model) if paper is None else paper

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
    for g, entry in (paper.items() if not no_refuse else []):
        if not isinstance(entry, dict) or "delta_refuse" not in entry:
            continue
        color = GROUP_STYLE[g][0] if g in GROUP_STYLE else style.get(g, (None, "tab:gray"))[1]
        dr = entry["delta_refuse"]
        (y0, y1) = _span(dr.get("range", dr.get("value")))
        label = f"paper ({_paper_name(model)}) {g.removeprefix('jailbreak: ')}: "
        if "delta_harmful" in entry:
            dh = entry["delta_harmful"]
            (x0, x1) = _span(dh.get("range", dh.get("value")))
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=1.4, edgecolor=color,
                                   label=label + f"Δh {paper_value(dh)}, Δr {paper_value(dr)} ({paper_source(dr)})"))
        else:
            ax.axhspan(y0, y1, facecolor="none", edgecolor=color, hatch="///", lw=0.6, alpha=0.6,
                       label=label + f"Δr {paper_value(dr)} ({paper_source(dr)})")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("Δharmful at t_inst (≥ 0: Latent Guard says unsafe)")
    if no_refuse:
        ax.set_yticks(range(len(names)), labels)
        ax.set_ylabel("Δrefuse undefined (no training prompt refused): Δharmful per group")
    else:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel("Δrefuse at t_post-inst (≥ 0: refusal belief)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
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


RATE_N = {"rate_%": "n", "no_%": "n_valid", "invalid_%": "n", "refusal_text_%": "n"}  # the count behind each rate


def _paper_points(ax, paper, arm_colors=None):
    """The paper's values on a by-layer panel: [{"entry", "label", "arm"}] (entries of paper_numbers.yaml).

    An entry with a layer is an open diamond at that layer (bars where the layer or value is a range); one
    without a layer holds at every layer: a hatched span (range) or a dotted line (value). Colour: the arm's.
    """
    for ref in paper:
        entry = ref["entry"]
        color = (arm_colors or {}).get(ref.get("arm"), "tab:gray" if ref.get("arm") == "baseline" else "tab:purple")
        y = entry["range"] if "range" in entry else entry["value"]
        if entry.get("layer") is None:
            if isinstance(y, (list, tuple)):
                ax.axhspan(*y, facecolor="none", edgecolor=color, hatch="///", lw=0.6, alpha=0.6, label=ref["label"])
            else:
                ax.axhline(y, color=color, ls=":", lw=1.5, label=ref["label"])
            continue
        (x0, x1), (y0, y1) = _span(entry["layer"]), _span(y)
        xs, ys = (x0 + x1) / 2, (y0 + y1) / 2
        ax.errorbar([xs], [ys], xerr=[[xs - x0], [x1 - xs]] if x1 > x0 else None,
                    yerr=[[ys - y0], [y1 - ys]] if y1 > y0 else None, fmt="D", ms=7, mfc="none", mew=1.6,
                    capsize=3, color=color, label=ref["label"], zorder=10)


def _match_arm(key: str, arms) -> str | None:
    """The plotted arm a paper key names: "harmfulness" → "+harmfulness…", "-refusal@all" → "-refusal@all"."""
    if key == "baseline":
        return "baseline"
    want = key if key[0] in "+-" else "+" + key
    for arm in arms:
        if arm == want or arm.startswith(want.split("@")[0]) and ("@" not in want or arm.endswith(want.split("@")[1])):
            return arm
    return None


def _steering_panels(df, metrics, title, paper=None):
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
            ncol = RATE_N.get(col)
            arm_colors = {arm: ARM_COLORS[k % len(ARM_COLORS)] for k, arm in enumerate(arms)}
            for k, arm in enumerate(arms):
                d = cell[(cell["arm"] == arm) & (cell["control"] == "layer_sweep")].sort_values("layer")
                color = ARM_COLORS[k % len(ARM_COLORS)]
                ax.plot(d["layer"], d[col], marker="o", ms=3, color=color, label=arm)
                if ncol in d and len(d):
                    ok = d[ncol].astype(float) > 0
                    lo, hi = wilson((d[col] / 100 * d[ncol])[ok].astype(float), d[ncol][ok].astype(float))
                    ax.fill_between(d["layer"][ok].astype(float), 100 * lo, 100 * hi, color=color, alpha=0.13, lw=0)
            if len(base) and col in base:
                ax.axhline(float(base[col].iloc[0]), color="black", ls="--", lw=1, label="unsteered")
            if ncol in cell and i == 0:
                ax.plot([], [], color="grey", alpha=0.3, lw=6, label="Wilson 95 % interval")
            if paper and col == paper["metric"]:
                side = paper["sides"].get(set_name, paper["sides"].get(None, {}))
                _paper_points(ax, [{"entry": e, "arm": _match_arm(k, [*arms, "baseline"]), "label": paper_label(e, k, paper["model"], " %")}
                                   for k, e in side.items() if isinstance(e, dict)], arm_colors)
            if "%" in ylabel:
                ax.set_ylim(-3, 103)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylabel(ylabel)
            if i == 0:
                n = int(base["n"].iloc[0]) if len(base) else int(cell["n"].max())
                ax.set_title(f"{set_name}" + (f", {q}" if q is not None else "") + f" (n={n} per layer)")
            ax.set_xlabel("steered layer l (vector added at the input of decoder layer l)" if i == len(metrics) - 1
                          else "steered layer l", fontsize=8 if i < len(metrics) - 1 else None)
        # the legend of a column (its arms, the unsteered line, the paper's values) goes under the column, off the data
        handles, labels = axes[0, j].get_legend_handles_labels()
        axes[-1, j].legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=1)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def steering_refusal_figure(table, model: str, paper=None):
    """Paper Fig 4: refusal rate of accepted-harmless prompts by steered layer, one curve per direction.

    Bands: Wilson 95 % intervals from each layer's n. `paper`: the paper's values for this model
    ({"baseline", "harmfulness", "refusal": entry}; default harmref/paper_numbers.yaml, none for a model
    that is not one of the paper's), drawn on the rate panel (see `_paper_points`).
    """
    paper = paper_numbers("fig4", model) if paper is None else paper
    return _steering_panels(
        table.assign(question_id=None),
        [("rate_%", "refusal rate % (substring)"), ("score", "refusal log-odds, 1st token")],
        f"{model}: steering accepted harmless prompts toward refusal (paper Fig 4)",
        paper={"metric": "rate_%", "model": model, "sides": {None: paper}} if paper else None,
    )


def reply_inversion_figure(table, model: str, paper=None):
    """Paper Fig 5: "No" rate by steered layer per direction, harmless and harmful prompts.

    `paper`: the paper's "No" % ({"harmless": {arm: entry}, "harmful": …}; default harmref/paper_numbers.yaml),
    drawn on the "No" panels of the harmless and the harmful prompt set (the set whose name says which).
    """
    paper = paper_numbers("fig5", model) if paper is None else paper
    sides = {}
    for set_name in dict.fromkeys(table["set"]) if len(table) else []:
        kind = [k for k in ("harmless", "harmful") if k in str(set_name)]
        if len(kind) == 1 and kind[0] in paper:
            sides[set_name] = paper[kind[0]]
    return _steering_panels(
        table,
        [("no_%", '"No" % of valid answers'), ("invalid_%", "invalid answers %"),
         ("refusal_text_%", "replies that are refusals %"), ("score", "log P(Certainly) − log P(No), 1st token")],
        f"{model}: reply inversion under steering (paper Fig 5)",
        paper={"metric": "no_%", "model": model, "sides": sides} if sides else None,
    )


CONTROL_METRIC = {  # one metric per axis: each experiment's rate gets its own row of panels
    "refusal": "Δ refusal rate vs unsteered (pp, substring; Fig 4 prompts)",
    "inversion": 'Δ "No" % of valid answers vs unsteered (pp; Fig 5 prompts)',
}


def steering_controls_figure(controls, model: str):
    """Controls at each arm's best layer: coefficient sweep, norm-matched and swapped-scope directions (Δ vs unsteered).

    One row of panels per experiment, so the refusal rate (Fig 4) and the "No" rate (Fig 5) never share an axis.
    """
    if controls.empty:
        return _no_data(f"{model}: steering controls")
    exps = [e for e in CONTROL_METRIC if (controls["experiment"] == e).any()]
    exps += [e for e in dict.fromkeys(controls["experiment"]) if e not in exps]
    fig, axes = plt.subplots(len(exps), 2, figsize=(14, 5.6 * len(exps)), squeeze=False)
    q = controls["question_id"].map(lambda x: f" {x}" if isinstance(x, str) else "")
    controls = controls.assign(key=controls["set"] + q + " · " + controls["arm"] + " @L" + controls["layer"].astype(int).astype(str))
    for row, exp in enumerate(exps):
        ax1, ax2 = axes[row]
        metric = CONTROL_METRIC.get(exp, f"Δ rate vs unsteered (pp; {exp})")
        sub = controls[controls["experiment"] == exp]
        for k, (key, g) in enumerate(sub[sub["control"] == "coefficient"].groupby("key", sort=False)):
            color = ARM_COLORS[k % len(ARM_COLORS)]
            c0, ref = g["reference_coeff"].iloc[0], g["reference_%"].iloc[0] - g["baseline_%"].iloc[0]
            pts = sorted([*zip(g["coeff"], g["delta_%"]), (c0, ref)])
            ax1.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, color=color, label=key)
            ax1.plot([c0], [ref], marker="*", ms=10, color=color)
        ax1.set_xscale("log", base=2)
        ax1.axhline(0, color="grey", lw=0.8)
        ax1.set_xlabel("coefficient c (h + c·v; ★ = the layer sweep's c)")
        ax1.set_ylabel(metric, fontsize=8)
        ax1.set_title(f"{exp}: coefficient sweep at each arm's best layer")
        if ax1.lines:
            ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        other = sub[sub["control"].isin(["norm_matched", "scope_swap"])]
        keys = list(dict.fromkeys(other["key"]))
        width = 0.27
        for i, key in enumerate(keys):
            g = other[other["key"] == key]
            ref = g["reference_%"].iloc[0] - g["baseline_%"].iloc[0]
            ax2.barh(i - width, ref, width, color="tab:gray", label="as swept")
            for off, ctl, color, label in ((0, "norm_matched", "tab:olive", "other direction's norm"),
                                           (width, "scope_swap", "tab:cyan", "other direction's scope")):
                d = g[g["control"] == ctl]
                if len(d):
                    ax2.barh(i + off, float(d["delta_%"].iloc[0]), width, color=color, label=label)
        ax2.set_yticks(range(len(keys)), keys, fontsize=6)
        sweep, bars = sub[sub["control"] == "coefficient"], other
        for ax, d in ((ax1, sweep), (ax2, bars)):
            if not d["delta_%"].notna().any():
                ax.text(0.5, 0.5, "no control with a defined rate", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax2.axvline(0, color="grey", lw=0.8)
        ax2.set_xlabel(metric, fontsize=8)
        ax2.set_ylabel("set · arm @ its best layer")
        ax2.set_title(f"{exp}: norm-matched and swapped-scope controls")
        handles, labels = ax2.get_legend_handles_labels()
        if handles:
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
        # "refused · judged harmless" on two lines: four groups side by side fit a third of the figure
        labels = [f"{g.replace(' · ', chr(10))}\n(n={int(tq.loc[g, 'n']) if g in tq.index else 0})" for g in groups]
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


def attack_figure(layers: pd.DataFrame, model: str):
    """Paper Fig 7: Δharmful (t_inst) and Δrefuse (t_post-inst) by layer, one curve per number of attack pairs."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, col, title in ((axes[0], "delta_harmful", "Δharmful at t_inst"), (axes[1], "delta_refuse", "Δrefuse at t_post-inst")):
        for n, d in layers.groupby("n_pairs"):
            d = d.sort_values("layer")
            label = "before attack" if n == 0 else f"attacked, N = {n}"
            ax.plot(d["layer"], d[col], marker="o", ms=3, lw=2 if n == 0 else 1.2, color="black" if n == 0 else None, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("layer (residual stream entry)")
        ax.set_ylabel("mean score (pre-attack centroids)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{model}: fine-tuning attack on held-out harmful prompts (paper Fig 7)")
    fig.tight_layout()
    return fig
