"""The paper's tables and figure data in the paper's layout, ours beside the paper's (paper_tables.md).

`sections(tables, model)` turns one model's result tables (DataFrames, by table name; a missing
one is None) into (title, DataFrame, note) sections: Table 1, Fig 2, App. F, Fig 3, the §3.4 cosine,
Fig 4, Fig 5, Fig 6, Table 3, Fig 7. `render` writes them for one model or, with several models,
each section with one block of rows per model, as the paper lays out its three models.
The paper's numbers come from `harmref.paper` with their source tag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import paper

GROUPS = ("refused-harmful", "accepted-harmless", "refused-harmless", "accepted-harmful")
T3_COLUMNS = ("adv_suffix", "persuasion", "template", "refused_hl", "accepted_hf")
T3_GUARDS = {"llama_guard3": "Llama Guard 3", "latent_guard": "Latent Guard", "minilm": "MiniLM + LR",
             "refusal_direction": "refusal direction (Δrefuse ≥ 0)", "own_refusal": "the model's own refusal"}


def _f(x, fmt=".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def _pm(mean, sd) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:+.3g} ± {sd:.2g}" if not pd.isna(sd) else f"{mean:+.3g}"


def table1(t, model):
    if t is None or not (t["set"] == "advbench").any():
        return None
    r = t[t["set"] == "advbench"].iloc[0]
    p = paper.get("table1", model)
    return pd.DataFrame([{"model": model, "n": int(r["n"]), "with post-inst (ours)": _f(r["refusal_with_post_%"], ".1f"),
                          "without post-inst (ours)": _f(r["refusal_without_post_%"], ".1f"),
                          "with (paper)": paper.fmt(p.get("with")), "without (paper)": paper.fmt(p.get("without"))}])


def fig2(clust, positions_table, model):
    if clust is None:
        return None
    c = clust.assign(w=clust["mean_s"] * clust["n"]).groupby(["group", "position", "layer"], as_index=False)[["w", "n"]].sum()
    c["mean_s"] = c["w"] / c["n"]
    post = [p for p in dict.fromkeys(clust["position"]) if p not in ("t_inst", "t_inst-1", "t_inst-2")]
    last = post[-1] if post else "t_inst"
    ref = paper.get("fig2", model)
    rows = []
    for pos, label in (("t_inst", "t_inst"), (last, "t_post-inst")):
        for g in GROUPS:
            d = c[(c["position"] == pos) & (c["group"] == g)]
            if d.empty:
                rows.append({"model": model, "position": label, "group": g, "n": 0, "mean s over layers (ours)": "—",
                             "range over layers (ours)": "—", "paper": paper.fmt(ref.get(label, {}).get(g))})
                continue
            rows.append({"model": model, "position": label, "group": g, "n": int(d["n"].iloc[0]),
                         "mean s over layers (ours)": _f(d["mean_s"].mean(), "+.3g"),
                         "range over layers (ours)": f"{d['mean_s'].min():+.3g}…{d['mean_s'].max():+.3g}",
                         "paper": paper.fmt(ref.get(label, {}).get(g))})
    return pd.DataFrame(rows)


def fig14(positions_table, model):
    if positions_table is None:
        return None
    t = positions_table.copy()
    t.insert(0, "model", model)
    return t.round(4)


def fig3(beliefs, model):
    if beliefs is None:
        return None
    ref = paper.get("fig3", model)
    rows = []
    for g in GROUPS:
        d = beliefs[beliefs["group"] == g]
        row = {"model": model, "group": g, "n": len(d)}
        for col, short in (("delta_harmful", "Δharmful"), ("delta_refuse", "Δrefuse")):
            v = d[col].dropna()
            row[f"{short} mean [p10, p90] (ours)"] = (f"{v.mean():+.3g} [{v.quantile(0.1):+.3g}, {v.quantile(0.9):+.3g}]"
                                                     if len(v) else "—")
            row[f"{short} (paper)"] = paper.fmt(ref.get(g, {}).get(col))
        rows.append(row)
    return pd.DataFrame(rows)


def cosine(cos, model):
    if cos is None:
        return None
    v = cos["cos_harm_inst__refusal_post"].astype(float)
    ref = paper.get("cosine", model)
    return pd.DataFrame([{"model": model, "mean cos(v_harmful@t_inst, v_refuse@t_post-inst) (ours)": _f(v.mean(), "+.3f"),
                          "range over layers (ours)": f"{v.min():+.3f}…{v.max():+.3f}" if v.notna().any() else "—",
                          "paper": paper.fmt(ref.get("harmfulness_refusal"))}])


def fig4(t, model):
    if t is None or t.empty:
        return None
    ref = paper.get("fig4", model)
    rows = []
    base = t[t["arm"] == "baseline"]
    if len(base):
        b = base.iloc[0]
        rows.append({"model": model, "curve": "baseline (unsteered)", "ours %": _f(b["rate_%"], ".0f"), "layer (ours)": "—",
                     "n": int(b["n"]), "paper": paper.fmt(ref.get("baseline"), " %")})
    sweep = t[t["control"] == "layer_sweep"]
    for arm, d in sweep.groupby("arm", sort=False):
        r = d.loc[d["rate_%"].idxmax()]
        key = "harmfulness" if "harmfulness" in arm else "refusal" if "refusal" in arm else None
        rows.append({"model": model, "curve": f"{arm}: peak", "ours %": _f(r["rate_%"], ".0f"), "layer (ours)": _f(r["layer"], ".0f"),
                     "n": int(r["n"]), "paper": paper.fmt(ref.get(key), " %") if arm.startswith("+") and key else "—"})
    return pd.DataFrame(rows)


def fig5(t, model):
    if t is None or t.empty:
        return None
    ref = paper.get("fig5", model)
    rows = []
    for (s, arm), d in t.groupby(["set", "arm"], sort=False):
        d = d[d["n_valid"] > 0].copy()
        d["k"] = d["no_%"] * d["n_valid"] / 100
        kind = "harmful" if "harmful" in s and "harmless" not in s else "harmless"
        g = d.groupby(d["layer"].astype(float).fillna(-1))[["k", "n_valid"]].sum()
        row = {"model": model, "prompts": s, "curve": arm, "n valid": int(g["n_valid"].sum()) if len(g) else 0}
        if len(g):
            rate = 100 * g["k"] / g["n_valid"]
            row["“No” % min (layer)"] = f"{rate.min():.0f} ({int(rate.idxmin())})" if arm != "baseline" else f"{rate.iloc[0]:.0f}"
            row["“No” % max (layer)"] = f"{rate.max():.0f} ({int(rate.idxmax())})" if arm != "baseline" else "—"
        else:
            row["“No” % min (layer)"] = row["“No” % max (layer)"] = "no valid answer"
        row["paper"] = paper.fmt(ref.get(kind, {}).get(arm), " %")
        rows.append(row)
    return pd.DataFrame(rows)


def fig6(t, model):
    if t is None:
        return None
    ref = paper.get("fig6", model)
    rows = []
    for r in t.itertuples():
        rows.append({"model": model, "group": r.group, "n": int(r.n),
                     "Δharmful mean ± sd (ours)": _pm(r.delta_harmful_mean, r.delta_harmful_sd),
                     "Δrefuse mean ± sd (ours)": _pm(r.delta_refuse_mean, r.delta_refuse_sd),
                     "Δharmful (paper)": paper.fmt(ref.get(r.group, {}).get("delta_harmful")),
                     "Δrefuse (paper)": paper.fmt(ref.get(r.group, {}).get("delta_refuse"))})
    return pd.DataFrame(rows)


def table3(t, model):
    if t is None:
        return None
    rows = t.set_index("test_set")
    col_row = {c: ("adv_suffix_self" if c == "adv_suffix" and "adv_suffix_self" in rows.index else c) for c in T3_COLUMNS}
    ref = paper.table3().get(model, {})
    out = []
    for g, name in T3_GUARDS.items():
        if g in t and t[g].notna().any():
            row = {"model": model, "guard": name, "source": "ours"}
            for c, ours in col_row.items():
                ok = ours in rows.index and int(rows.loc[ours, "n"]) > 0 and not pd.isna(rows.loc[ours].get(g))
                row[c] = f"{rows.loc[ours, g]:.1f} (n = {int(rows.loc[ours, 'n'])})" if ok else "—"
            out.append(row)
        if g in ref:
            out.append({"model": model, "guard": name, "source": "paper [P]", **{c: f"{ref[g][c]:.1f}" for c in T3_COLUMNS}})
    return pd.DataFrame(out)


def fig7(attack, layers, model):
    if attack is None:
        return None
    f7 = paper.get("fig7", "any")
    rows = []
    for r in attack.sort_values("n_pairs").itertuples():
        rows.append({"model": model, "attack pairs N": int(r.n_pairs), "acceptance % (ours)": _f(100 * r.acceptance_rate, ".0f"),
                     "n": int(r.n_prompts), f"Δharmful layers {r.middle_layers} (ours)": _f(r.delta_harmful_mid, "+.3g"),
                     f"Δrefuse layers {r.middle_layers} (ours)": _f(r.delta_refuse_mid, "+.3g"),
                     "paper": paper.fmt(f7.get("delta_harmful_by_layer")) + " by layer, curves overlap"})
    return pd.DataFrame(rows)


TITLES = [
    ("Table 1: removing post-instruction tokens (AdvBench, substring refusal %)", "table1"),
    ("Fig 2: clustering score s by position (mean over held-out prompts)", "fig2"),
    ("App. F, Fig 14: mean s over the middle layers by position", "fig14"),
    ("Fig 3: Δharmful and Δrefuse per behaviour group", "fig3"),
    ("§3.4: cosine between the harmfulness and refusal directions", "cosine"),
    ("Fig 4: steering accepted-harmless prompts toward refusal (substring refusal %)", "fig4"),
    ("Fig 5: reply inversion, “No” % among valid answers", "fig5"),
    ("Fig 6: jailbroken prompts against the refused-harmful reference", "fig6"),
    ("Table 3: guard accuracy % (the paper's adv-suffix = nanoGCG against the model itself: our adv_suffix_self)", "table3"),
    ("Fig 7: fine-tuning attack", "fig7"),
]


def sections(t: dict, model: str) -> dict[str, pd.DataFrame | None]:
    """One model's sections, by key of TITLES; t: table name → DataFrame or None."""
    g = t.get
    return {
        "table1": table1(g("table1_post_instruction"), model),
        "fig2": fig2(g("clustering"), g("clustering_positions"), model),
        "fig14": fig14(g("clustering_positions"), model),
        "fig3": fig3(g("beliefs"), model),
        "cosine": cosine(g("cosine_by_layer"), model),
        "fig4": fig4(g("fig4_steering_refusal"), model),
        "fig5": fig5(g("fig5_reply_inversion"), model),
        "fig6": fig6(g("fig6_group_means"), model),
        "table3": table3(g("table3_guards"), model),
        "fig7": fig7(g("finetune_attack"), g("finetune_attack_layers"), model),
    }


def _md(df: pd.DataFrame) -> str:
    cells = df.astype(object).map(lambda x: str(x).replace("|", "\\|").replace("\n", " "))
    return cells.to_markdown(index=False)


def render(per_model: dict[str, dict], claims: dict[str, pd.DataFrame] | None = None) -> str:
    """Markdown: a claims summary per model, then each section with every model's rows (the paper's layout)."""
    models = list(per_model)
    lines = [f"# The paper's tables and figure data, ours beside the paper's: {', '.join(f'`{m}`' for m in models)}", "",
             "Paper numbers (harmref/paper_numbers.yaml): [P] paper text, [W≈] figure read by eye (approximate), "
             "[A] released tensors; “—”: the paper gives none for this model. Ours: this run's tables under "
             "results/{model}/tables/.", ""]
    if claims:
        lines += ["## Claims (paper §7)", ""]
        first = next(iter(claims.values())).set_index("claim")
        summary = pd.DataFrame({"claim": first.index, "title": first["title"].to_numpy()})
        for m, c in claims.items():
            summary[m] = c.set_index("claim")["verdict"].reindex(first.index).to_numpy()
        lines += [_md(summary), "", "Details: results/{model}/claims.md.", ""]
    for title, key in TITLES:
        parts = [s[key] for s in per_model.values() if s.get(key) is not None and len(s[key])]
        lines += [f"## {title}", ""]
        missing = [m for m, s in per_model.items() if s.get(key) is None or not len(s[key])]
        if parts:
            lines += [_md(pd.concat(parts, ignore_index=True)), ""]
        if missing:
            lines += [f"Not produced for {', '.join(f'`{m}`' for m in missing)}"
                      + (" (the fine-tuning attack runs only on a tuned model organism)." if key == "fig7" else "."), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ results/index.md
# (pattern on the path under results/, paper section, what it is); first match wins
INDEX = [
    (r"^benchmarks/", "run accounting", "time and memory per rule"),
    (r"^data/", "§3 datasets", "a prompt set as the run built it (or the manifest of all of them)"),
    (r"^models/", "§1 models", "model card, weights (safetensors) and, for a tuned model, its recipe and training data"),
    (r"claims\.(csv|md)$", "§7 claims", "the paper's claims with what this run measured and a computed verdict"),
    (r"paper_tables\.md$", "Tables 1, 3, Figs 2–7", "the paper's tables and figure data, ours beside the paper's"),
    (r"readme_results\.md$", "README", "the README's results block, generated from claims.csv (python -m harmref.claims readme)"),
    (r"(^|/)report(/|$)|^report_paper_tables\.html$", "HTML report", "table pages of snakemake --report results/report.html"),
    (r"claims_summary\.html$", "HTML report", "the claims table on the report's first page"),
    (r"table1_post_instruction", "Table 1", "AdvBench refusal with vs without the post-instruction tokens"),
    (r"refusal_rates", "§4 evaluation", "refusal rate of every prompt set (substring judge)"),
    (r"clustering_positions|fig14_positions", "App. F, Fig 14", "mean clustering score over the middle layers by position"),
    (r"clustering", "§3.2, Fig 2", "clustering score s by layer, group and position"),
    (r"stated_belief|belief_vs_behaviour", "§3.5 (beyond the paper)", "the stated belief (reply-inversion answer) vs behaviour and Δ signs"),
    (r"beliefs", "§3.3, Fig 3", "Δharmful and Δrefuse of every held-out prompt"),
    (r"harmfulness_accuracy", "§3.3", "held-out accuracy / AUROC of the centroid rule by layer"),
    (r"category_directions", "§5.9", "per-category harmfulness directions: pairwise cosines"),
    (r"cosine_by_layer", "§3.4", "cos(harmfulness, refusal direction) by layer, same and cross position"),
    (r"fig4_steering_refusal", "§3.4, Fig 4", "steering accepted-harmless prompts toward refusal, by layer"),
    (r"fig5_reply_inversion", "§3.5, Fig 5", "reply inversion under steering, by layer"),
    (r"steering_controls", "§3.4–3.5 controls (beyond the paper)", "coefficient, norm-matched and swapped-scope controls"),
    (r"gcg_attack", "§5.1 adv-suffix", "nanoGCG against the model itself, per goal"),
    (r"table3_guards|guard/predictions|guard_auroc", "§5.1, Table 3", "guard accuracy / AUROC / per-prompt predictions"),
    (r"fig6", "§5.1, Fig 6", "jailbroken prompts in the Δharmful–Δrefuse plane"),
    (r"finetune_attack|fig7", "§5.2, Fig 7", "the fine-tuning attack: acceptance and Δ scores by number of pairs"),
    (r"^organisms\.(csv|md)$", "model organisms (beyond the paper)", "every analysed tuned organism side by side (docs/organism_compare.md)"),
    (r"organism|inversion_accuracy", "model organism (beyond the paper)", "the safety-tuned organism against its base model"),
    (r"^text_guards/", "§5.1, Table 3", "text-only guard scores"),
    (r"/(generations|replies)/$", "§4 evaluation", "greedy replies per template and prompt set, judged refused / accepted"),
    (r"/hidden/$", "§2.2 hidden states", "residual stream at every layer, t_inst−2 … t_post-inst (safetensors + sidecar)"),
    (r"/directions/$", "§2.5 directions", "the four centroids and the harmfulness / refusal directions"),
    (r"/steering/$", "§3.4–3.5, Figs 4–5", "steered generations of every sweep and control"),
    (r"/guard/$", "§5.1, Table 3", "Latent Guard scores and centroids"),
]


def index_entry(path: str) -> tuple[str, str]:
    import re

    rel = path.removeprefix("results/")
    for pat, section, what in INDEX:
        if re.search(pat, rel):
            return section, what
    return "other", ""


def results_index(paths: list[str], folders: dict[str, int] | None = None) -> str:
    """results/index.md: one line per output (link relative to results/), its paper section and what it is;
    then one line per folder of intermediate outputs ({"results/m/hidden/": number of files})."""
    paths = sorted(dict.fromkeys(paths), key=lambda p: (p.count("/") > 1, p))
    lines = ["# Outputs of this run", "",
             "One line per output: the file (relative to results/), the paper section it belongs to, what it holds. "
             "Start with the claims (`*/claims.md`) and `paper_tables.md`; the HTML report: "
             "`snakemake --report results/report.html`.", "",
             "| output | paper | what |", "|---|---|---|"]
    for p in paths:
        section, what = index_entry(p)
        rel = p.removeprefix("results/")
        lines.append(f"| [{rel}]({rel}) | {section} | {what} |")
    if folders:
        lines += ["", "Intermediate outputs (inputs of the tables above), one line per folder:", "",
                  "| folder | paper | what |", "|---|---|---|"]
        for folder, n in sorted(folders.items()):
            section, what = index_entry(folder)
            rel = folder.removeprefix("results/")
            lines.append(f"| [{rel}]({rel}) ({n} file{'s' if n != 1 else ''}) | {section} | {what} |")
    return "\n".join(lines) + "\n"
