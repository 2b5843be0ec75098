"""Summaries and tables of steered generations (rule steering_report; Figs 4–5 and the controls).

`summarise` makes one row per cell (rate, invalid share, mean continuous score, baseline),
`best_layers` picks each arm's layer for the controls, `report_tables` writes the Fig 4, Fig 5 and
controls tables; the figures are `plots.steering_refusal_figure`, `plots.reply_inversion_figure`
and `plots.steering_controls_figure`.
"""

from __future__ import annotations

import math

GROUP = ["experiment", "set", "question_id", "arm", "control", "layer", "coeff", "rescale_to"]


def summarise(rows: list[dict]):
    """One row per cell: n, the rate the figure plots, invalid share, mean continuous score.

    refusal: rate = refused share (substring), score = refusal log-odds.
    inversion: rate = "No" share among valid answers (invalid dropped, as the paper),
    certainly = "Certainly" share among valid, refusal_text = share of replies that are
    refusals (substring judge), score = log P(Certainly) − log P(No).
    """
    import pandas as pd

    from .judging import SubstringJudge

    sub = SubstringJudge()
    if not rows:
        return pd.DataFrame(columns=[*GROUP, "norm", "n", "n_valid", "rate", "invalid", "se", "score", "score_se",
                                     "baseline_rate", "baseline_score"])
    df = pd.DataFrame(rows)
    for col in GROUP:
        if col not in df:
            df[col] = None
    df = df.astype({c: object for c in GROUP}).where(df.notna(), None)
    out = []
    for key, g in df.groupby(GROUP, dropna=False, sort=False):
        row = dict(zip(GROUP, key))
        row["norm"] = float(g["norm"].iloc[0])
        row["n"] = len(g)
        if row["experiment"] == "inversion":
            valid = g[g["answer"] != "invalid"]
            row["n_valid"] = len(valid)
            row["rate"] = float((valid["answer"] == "harmless").mean()) if len(valid) else float("nan")
            row["certainly"] = float((valid["answer"] == "harmful").mean()) if len(valid) else float("nan")
            row["invalid"] = 1 - len(valid) / len(g)
            # replies that are refusals (substring judge): the official parser reads most of them as "No"
            # ("I cannot…", "I will not…" contain "no"), so a refusal can masquerade as a harmless verdict
            row["refusal_text"] = float(g["response"].map(sub.refused).mean())
            sc = g["inversion_margin"]
        else:
            row["n_valid"] = len(g)
            row["rate"] = float(g["refused"].mean())
            row["invalid"] = 0.0
            if "llm_judge" in g and g["llm_judge"].notna().all():  # rate over the LLM's valid verdicts, invalid counted
                llm = g["refused_llm"].dropna()
                row["rate_llm"] = float(llm.astype(bool).mean()) if len(llm) else float("nan")
                row["invalid_llm"] = int(len(g) - len(llm))
            sc = g["refusal_score"]
        row["se"] = math.sqrt(row["rate"] * (1 - row["rate"]) / row["n_valid"]) if row["n_valid"] else float("nan")
        row["score"] = float(sc.mean())
        row["score_se"] = float(sc.std(ddof=1) / math.sqrt(len(sc))) if len(sc) > 1 else float("nan")
        out.append(row)
    summary = pd.DataFrame(out)
    base = summary[summary["arm"] == "baseline"].set_index(["experiment", "set", "question_id"])
    keys = list(zip(summary["experiment"], summary["set"], summary["question_id"]))
    summary["baseline_rate"] = [base["rate"].get(k, float("nan")) for k in keys]
    summary["baseline_score"] = [base["score"].get(k, float("nan")) for k in keys]
    return summary


def best_layers(summary, min_valid: float = 0.5) -> dict:
    """Per (experiment, set, arm) of the layer sweep: the layer with the largest |rate − baseline|.

    Effects are averaged over inversion questions; cells with fewer than `min_valid`
    valid answers count as no effect; ties go to the larger |score − baseline|.
    """
    sweep = summary[summary["control"] == "layer_sweep"].copy()
    ok = sweep["n_valid"] >= min_valid * sweep["n"]
    sweep["effect"] = ((sweep["rate"] - sweep["baseline_rate"]).abs().fillna(0) * ok
                       + 1e-6 * (sweep["score"] - sweep["baseline_score"]).abs().fillna(0))
    eff = sweep.groupby(["experiment", "set", "arm", "layer"], sort=False)["effect"].mean().reset_index()
    out = {}
    for key, g in eff.groupby(["experiment", "set", "arm"], sort=False):
        out[key] = int(g.loc[g["effect"].idxmax(), "layer"])
    return out


def report_tables(summary, model: str) -> dict:
    """Fig 4, Fig 5 and controls tables (rates in %) from `summarise` over sweeps + controls.

    Controls carry `reference_%`: the same arm at the same layer in the layer sweep.
    """
    s = summary.copy()
    s.insert(0, "model", model)
    s["layer"] = s["layer"].astype("Int64")
    for col in ("rate", "certainly", "invalid", "refusal_text", "baseline_rate", "se", "rate_llm"):
        if col in s:
            s[col] = 100 * s[col]
    s = s.rename(columns={"rate": "rate_%", "certainly": "certainly_%", "invalid": "invalid_%", "se": "se_%",
                          "refusal_text": "refusal_text_%", "baseline_rate": "baseline_%", "rate_llm": "rate_llm_%"})
    s["delta_%"] = s["rate_%"] - s["baseline_%"]
    sweep = s[s["control"].isin(["baseline", "layer_sweep"])]
    fig4 = sweep[sweep["experiment"] == "refusal"].drop(
        columns=["question_id", "certainly_%", "invalid_%", "refusal_text_%", "n_valid", "rescale_to"], errors="ignore")
    fig5 = sweep[sweep["experiment"] == "inversion"].drop(
        columns=["rate_llm_%", "invalid_llm", "rescale_to"], errors="ignore").rename(columns={"rate_%": "no_%"})
    ctl = s[~s["control"].isin(["baseline", "layer_sweep"])].copy()
    ref = sweep.set_index(["experiment", "set", "question_id", "arm", "layer"])
    keys = list(zip(ctl["experiment"], ctl["set"], ctl["question_id"], ctl["arm"], ctl["layer"]))
    ctl["reference_coeff"] = [ref["coeff"].get(k, float("nan")) for k in keys]
    ctl["reference_%"] = [ref["rate_%"].get(k, float("nan")) for k in keys]
    if "rate_llm_%" in s and s["rate_llm_%"].isna().all() and "invalid_llm" not in s:  # no LLM judge ran
        fig4, ctl = fig4.drop(columns="rate_llm_%"), ctl.drop(columns="rate_llm_%")
    return {"fig4": fig4, "fig5": fig5, "controls": ctl}
