"""Every analysed tuned organism side by side (issue 17): results/organisms.csv and results/organisms.md.

Rule `organism_compare` (rules/compare.smk) reads, for each model, tables other rules wrote and puts
them in one long ("tidy") table, one row per (section, metric, model):

    section, metric, model, value, n, ci_low, ci_high, note

`value` is a number, or text where the metric is text (a claim's verdict, the training device);
`n` is the count the value is over; `ci_low` / `ci_high` its 95 % interval where one is defined;
`note` says how to read the row, or why `value` is empty. The sections (SECTIONS, in order):

- `refusal`: refusal % per prompt set (tables/refusal_rates.csv: chat template, substring or LLM judge);
- `table1`: refusal % with vs without the post-instruction tokens, and the drop (tables/table1_post_instruction.csv);
- `clustering`: mean clustering score s over the middle layers (`directions.middle_layers`, `geometry.middle_layers`)
  per behaviour group at t_inst and at t_post-inst (tables/clustering.csv, pooled over sets as Fig 2);
- `inversion`: reply-inversion accuracy per question, trained on vs held out (tables/inversion_accuracy.csv);
- `steering`: Fig 5, for each steering arm the largest verdict shift over layers, its layer and the
  "No" % there, against the unsteered baseline (tables/fig5_reply_inversion.csv);
- `belief`: stated belief vs behaviour, the group sizes and the share of each disagreement group whose
  Δharmful follows the stated belief (and whose Δrefuse follows the behaviour) (tables/belief_vs_behaviour.csv);
- `training`: the organism's training cost and data (results/models/{model}/recipe.json);
- `claims`: every claim's verdict (results/{model}/claims.csv).

A file that is not there gives the section's rows with an empty value and the note `file not found: PATH`
(never an error); a metric one model has and another has not gives the other an empty row with the note
`not in PATH`. A file that is there but malformed (a missing column, a cell that is not a number, a
recipe field of the wrong type) raises `io.DataError` naming the file, the record and the field.
docs/organism_compare.md explains each row.
"""

from __future__ import annotations

import math
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .tables import wilson

Z = 1.959964  # 95 %

# section key → (title, the file each model's rows come from); the keys of `paths` in `compare`
SECTIONS = {
    "refusal": ("Refusal rate per prompt set (chat template)", "results/{model}/tables/refusal_rates.csv"),
    "table1": ("Table 1: refusal with vs without the post-instruction tokens", "results/{model}/tables/table1_post_instruction.csv"),
    "clustering": ("Fig 2: mean clustering score s over the middle layers", "results/{model}/tables/clustering.csv"),
    "inversion": ("Reply-inversion accuracy per question (the organism's own answers)", "results/{model}/tables/inversion_accuracy.csv"),
    "steering": ("Fig 5: steering the reply-inversion verdict, largest shift over layers", "results/{model}/tables/fig5_reply_inversion.csv"),
    "belief": ("Stated belief vs behaviour (margin verdict, all eval sets)", "results/{model}/tables/belief_vs_behaviour.csv"),
    "training": ("Training cost and data (recipe.json)", "results/models/{model}/recipe.json"),
    "claims": ("The paper's claims: verdicts", "results/{model}/claims.csv"),
}
COLUMNS = ["section", "metric", "model", "value", "n", "ci_low", "ci_high", "note"]
# Fig 2 groups: the off-diagonal ones (the paper's evidence) first, the diagonal ones for reference
CLUSTER_GROUPS = ("refused-harmless", "accepted-harmful", "refused-harmful", "accepted-harmless")


def default_paths(model: str) -> dict[str, str]:
    """{section: file} of `model` where the workflow writes them (rule organism_compare passes its inputs instead)."""
    return {key: where.format(model=model) for key, (_, where) in SECTIONS.items()}


# ------------------------------------------------------------------ reading, with clear errors
def read_csv(path, required=(), numeric=(), booleans=()) -> pd.DataFrame | None:
    """A result table, or None when the file is not there.

    `required` columns must be present, `numeric` ones (when present) must hold numbers or blanks,
    `booleans` True/False; otherwise `io.DataError` names the file, the row (as its line in the file)
    and the column.
    """
    path = Path(path)
    if not path.exists():
        return None
    text = io.read_text(path, bom_ok=True)
    try:
        df = pd.read_csv(StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise io.DataError(path, f"not a readable CSV table ({str(e).strip()})") from None
    for col in required:
        if col not in df.columns:
            raise io.DataError(path, f"missing column (the table has {', '.join(map(str, df.columns)) or 'none'})", field=col)
    for col in numeric:
        if col not in df.columns:
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise io.DataError(path, f"not a number: {df[col].iloc[i]!r}", record=f"line {i + 2}", field=col)
        df[col] = num
    for col in booleans:
        if col not in df.columns or df[col].dtype == bool:
            continue
        norm = df[col].map(lambda x: {"true": True, "false": False}.get(str(x).strip().lower()))
        if norm.isna().any():
            i = int(np.flatnonzero(norm.isna().to_numpy())[0])
            raise io.DataError(path, f"expected True or False, got {df[col].iloc[i]!r}", record=f"line {i + 2}", field=col)
        df[col] = norm.astype(bool)
    return df


def read_recipe(path) -> dict | None:
    """recipe.json of a tuned model (rule safety_tune), or None when the file is not there."""
    path = Path(path)
    if not path.exists():
        return None
    rec = io.read_json(path)
    if not isinstance(rec, dict):
        raise io.DataError(path, f"expected a JSON object, got {type(rec).__name__}")
    return rec


# ------------------------------------------------------------------ rows
def _row(section, metric, value=None, n=None, lo=None, hi=None, note=""):
    return {"section": section, "metric": metric, "value": value, "n": n, "ci_low": lo, "ci_high": hi, "note": note}


def _rate_row(section, metric, k, n, note=""):
    """A percentage k/n with its Wilson 95 % interval (empty when n is 0)."""
    if not n:
        return _row(section, metric, None, 0, note=note or "no valid verdict")
    lo, hi = wilson(k, n)
    return _row(section, metric, 100 * k / n, int(n), 100 * lo, 100 * hi, note)


def refusal_rows(df: pd.DataFrame) -> list[dict]:
    """Refusal % per set (over valid verdicts, Wilson 95 %); n = valid verdicts. Columns of `tables.refusal_rates`."""
    out = []
    for r in df.itertuples(index=False):
        n, invalid, k = int(r.n), int(r.invalid), int(r.refused)
        note = f"{invalid} invalid verdict{'s' if invalid != 1 else ''} left out" if invalid else ""
        out.append(_rate_row("refusal", f"{r.set} ({r.label}): refused %", k, n - invalid, note))
    return out


def table1_rows(df: pd.DataFrame) -> list[dict]:
    """Per set of Table 1: refused % with and without the post-instruction tokens, and the drop (with − without,
    points) with Newcombe's 95 % interval, as claim 1 computes it. AdvBench (the paper's set) first."""
    from .claims import newcombe

    out = []
    sets = list(dict.fromkeys(df["set"]))
    if "advbench" not in sets:
        out.append(_row("table1", "advbench: drop (with − without), pts", note="no advbench row (datasets.advbench.nopost)"))
    for name in sorted(sets, key=lambda s: s != "advbench"):
        r = df[df["set"] == name].iloc[0]
        n = int(r["n"])
        inv_w = int(r["invalid_with_post"]) if "invalid_with_post" in df and not pd.isna(r["invalid_with_post"]) else 0
        inv_n = int(r["invalid_without_post"]) if "invalid_without_post" in df and not pd.isna(r["invalid_without_post"]) else 0
        nw, nn = n - inv_w, n - inv_n
        w, wo = float(r["refusal_with_post_%"]), float(r["refusal_without_post_%"])
        kw, kn = round(w * nw / 100), round(wo * nn / 100)
        out.append(_rate_row("table1", f"{name}: refused % with post-inst tokens", kw, nw))
        out.append(_rate_row("table1", f"{name}: refused % without post-inst tokens", kn, nn))
        if min(nw, nn) == 0:
            out.append(_row("table1", f"{name}: drop (with − without), pts", None, n, note="no valid verdict with or without"))
            continue
        d, lo, hi = newcombe(kw, nw, kn, nn)
        out.append(_row("table1", f"{name}: drop (with − without), pts", w - wo, n, 100 * lo, 100 * hi, "Newcombe 95 %"))
    return out


def post_position(positions) -> str:
    """The label of t_post-inst among the captured positions: the last `post_k` (t_inst when there is none)."""
    post = [p for p in positions if str(p).startswith("post_") and str(p)[5:].isdigit()]
    return max(post, key=lambda p: int(p[5:])) if post else "t_inst"


def clustering_rows(df: pd.DataFrame, fractions, where="clustering.csv") -> list[dict]:
    """Mean s over the middle layers per group at t_inst and t_post-inst, pooled over the eval sets.

    The same numbers as tables/clustering_positions.csv (`geometry.pooled_clustering`, `geometry.middle_layers`,
    `geometry.position_table`). Interval: mean ± 1.96 · (mean over the middle layers of the per-layer SD) / √n,
    conservative (the SD of a per-prompt mean over layers is at most the mean of the layers' SDs)."""
    from . import geometry

    positions = list(dict.fromkeys(df["position"]))
    if "t_inst" not in positions:
        raise io.DataError(where, f"no t_inst rows (positions {positions})", field="position")
    layers = sorted(int(x) for x in df["layer"].dropna().unique())
    n_entries = layers[-1] + 1 if layers else 0
    lo, hi = geometry.middle_layers(n_entries, fractions)
    pooled = geometry.pooled_clustering(df)
    means = geometry.position_table(pooled, (lo, hi), positions).set_index("position")
    mid = pooled[(pooled["layer"] >= lo) & (pooled["layer"] <= hi)]
    post = post_position(positions)
    out = []
    for label, pos in (("t_inst", "t_inst"), ("t_post-inst", post)):
        where_note = f"layers {lo}–{hi} of {n_entries}" + (f", position {pos}" if label != pos else "")
        for g in CLUSTER_GROUPS:
            metric = f"{label} · {g}: mean s"
            cell = mid[(mid["group"] == g) & (mid["position"] == pos)]
            if cell.empty or g not in means.columns:
                out.append(_row("clustering", metric, None, 0, note=f"no {g.replace('-', ' ')} prompt"))
                continue
            n = int(cell["n"].iloc[0])
            m = float(means.loc[pos, g])
            sd = float(cell["sd_s"].mean()) if "sd_s" in cell and cell["sd_s"].notna().any() else float("nan")
            half = Z * sd / math.sqrt(n) if n > 1 and not math.isnan(sd) else float("nan")
            ci = (m - half, m + half) if not math.isnan(half) else (None, None)
            out.append(_row("clustering", metric, m, n, *ci, where_note))
    return out


def inversion_rows(df: pd.DataFrame, model: str) -> list[dict]:
    """The organism's reply-inversion accuracy per question (invalid answers count as wrong, Wilson 95 %), its
    balanced accuracy and invalid answers; then accuracy pooled over the trained and over the held-out questions."""
    own = df[df["model"] == model]
    if own.empty:
        return [_row("inversion", "accuracy %", note=f"no rows for model {model} (models {sorted(set(df['model']))})")]
    out, pooled = [], {True: [0, 0, []], False: [0, 0, []]}
    for r in own.to_dict("records"):
        q, n, trained = str(r["question"]), int(r["n"]), bool(r["trained_on"])
        k = int(r["harmful_certainly"]) + int(r["harmless_no"])
        role = "trained on" if trained else "held out"
        out.append(_rate_row("inversion", f"{q}: accuracy %", k, n, role))
        bal = r["balanced_accuracy"]
        out.append(_row("inversion", f"{q}: balanced accuracy %", None if pd.isna(bal) else 100 * float(bal), n, note=role))
        out.append(_row("inversion", f"{q}: invalid answers", int(r["harmful_invalid"]) + int(r["harmless_invalid"]), n, note=role))
        pooled[trained][0] += k
        pooled[trained][1] += n
        pooled[trained][2].append(q)
    for trained, (k, n, qs) in pooled.items():
        what = "trained" if trained else "held-out"
        out.append(_rate_row("inversion", f"{what} questions: accuracy %", k, n, ", ".join(qs) if qs else f"no {what} question"))
    return out


def steering_rows(df: pd.DataFrame) -> list[dict]:
    """Fig 5 per prompt set: the unsteered "No" %, and per arm the largest shift over layers toward the arm's
    verdict ("Certainly" for a + arm, "No" for a − arm; points), its layer and the "No" % there (Wilson 95 %).
    Cells pool the inversion questions, as claims 8–9 do (`claims._inversion_cells`)."""
    from .claims import _inversion_cells

    out = []
    for name in dict.fromkeys(df["set"]):
        base = _inversion_cells(df, name, "baseline")
        b = base.iloc[0] if len(base) else None
        if b is None:
            out.append(_row("steering", f"{name}: unsteered “No” %", note="no valid unsteered answer"))
        else:
            out.append(_rate_row("steering", f"{name}: unsteered “No” %", int(b["k"]), int(b["n_valid"])))
        for arm in dict.fromkeys(df.loc[(df["set"] == name) & (df["arm"] != "baseline"), "arm"]):
            plus = str(arm).startswith("+")
            toward = "Certainly" if plus else "No"
            metric = f"{name} · {arm}: largest shift toward “{toward}”, pts"
            cells = _inversion_cells(df, name, arm)
            cells = cells[cells["layer"] >= 0]
            if cells.empty:
                out.append(_row("steering", metric, note="no valid answer at any layer"))
                continue
            if b is None:
                out.append(_row("steering", metric, note="no unsteered baseline to shift from"))
                continue
            shift = (b["rate"] - cells["rate"]) if plus else (cells["rate"] - b["rate"])
            best = cells.loc[shift.idxmax()]
            layer = int(best["layer"])
            out.append(_row("steering", metric, float(shift.max()), int(best["n_valid"]), note=f"layer {layer}"))
            out.append(_rate_row("steering", f"{name} · {arm}: “No” % at that layer", int(best["k"]), int(best["n_valid"]), f"layer {layer}"))
            out.append(_row("steering", f"{name} · {arm}: that layer", layer, note=f"{len(cells)} layers steered"))
    return out


def belief_rows(df: pd.DataFrame) -> list[dict]:
    """Per question (margin verdict, all sets): the size of each behaviour × stated-belief group; for each
    disagreement group (and both pooled) the share whose Δharmful follows the stated belief and whose Δrefuse
    follows the behaviour (Wilson 95 %, over the prompts with a finite score)."""
    from .belief import DISAGREE, GROUPS, POOLED_DISAGREE

    t = df[(df["verdict"] == "margin") & (df["set"] == "all")]
    if t.empty:
        return [_row("belief", "prompts", note="no margin-verdict rows over all sets")]
    out = []
    for q in dict.fromkeys(t["question"]):
        g = t[t["question"] == q].set_index("group")
        for grp in (*GROUPS, POOLED_DISAGREE):
            n = int(g.loc[grp, "n"]) if grp in g.index else None
            out.append(_row("belief", f"{q} · {grp}: prompts", n, note="" if n is not None else "group not in the table"))
        for grp in (*DISAGREE, POOLED_DISAGREE):
            for score, ref, label in (("dh", "belief", "Δharmful follows the stated belief"),
                                      ("dr", "behaviour", "Δrefuse follows the behaviour")):
                metric = f"{q} · {grp}: {label} %"
                if grp not in g.index:
                    out.append(_row("belief", metric, note="group not in the table"))
                    continue
                r = g.loc[grp]
                n = r[f"{score}_n_scored"]
                if pd.isna(n) or int(n) == 0:
                    out.append(_row("belief", metric, None, 0, note="no prompt scored" if int(r["n"]) else "empty group"))
                    continue
                out.append(_row("belief", metric, float(r[f"{score}_{ref}_%"]), int(n),
                                float(r[f"{score}_{ref}_lo_%"]), float(r[f"{score}_{ref}_hi_%"])))
    return out


# (metric, where in recipe.json, kind): a number or a text
RECIPE_FIELDS = [
    ("examples: total", ("n_examples",), "number"),
    ("training mode", ("hyperparameters", "mode"), "text"),
    ("steps", ("hyperparameters", "steps"), "number"),
    ("batch size", ("hyperparameters", "batch_size"), "number"),
    ("epochs", ("epochs",), "number"),
    ("tokens seen", ("tokens_seen",), "number"),
    ("final loss (mean of last 10 steps)", ("final_loss",), "number"),
    ("train wall seconds", ("wall_seconds",), "number"),
    ("train peak RSS GB", ("peak_rss_gb",), "number"),
    ("script wall seconds", ("script_seconds",), "number"),
    ("script peak RSS GB", ("script_peak_rss_gb",), "number"),
    ("torch threads", ("torch_threads",), "number"),
    ("device", ("device",), "text"),
]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def training_rows(rec: dict, where="recipe.json") -> list[dict]:
    """The examples by kind and the training cost recorded by rule safety_tune (`training.recipe`)."""
    out = []
    examples = rec.get("examples")
    if examples is None:
        out.append(_row("training", "examples", note="no field examples"))
    elif not isinstance(examples, dict):
        raise io.DataError(where, f"expected an object of counts by kind, got {type(examples).__name__}", field="examples")
    else:
        for kind, k in examples.items():
            if not _number(k):
                raise io.DataError(where, f"expected a count, got {k!r}", field=f"examples.{kind}")
            out.append(_row("training", f"examples: {kind}", k))
    for metric, keys, kind in RECIPE_FIELDS:
        node = rec
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        name = ".".join(keys)
        if node is None:
            out.append(_row("training", metric, note=f"no field {name}"))
            continue
        if kind == "number" and not _number(node):
            raise io.DataError(where, f"expected a number, got {node!r}", field=name)
        if kind == "text" and not isinstance(node, str):
            raise io.DataError(where, f"expected a string, got {node!r}", field=name)
        out.append(_row("training", metric, node))
    return out


def claims_rows(df: pd.DataFrame) -> list[dict]:
    """One row per claim: value = the verdict, note = its reason (harmref/claims.py)."""
    out = []
    for r in df.to_dict("records"):
        reason = r.get("reason")
        out.append(_row("claims", f"claim {int(r['claim'])}: {r['title']}", str(r["verdict"]),
                        note="" if reason is None or pd.isna(reason) else str(reason)))
    return out


# ------------------------------------------------------------------ one model, all models
def model_rows(model: str, paths: dict[str, str], middle_layers) -> tuple[list[dict], dict[str, tuple[str, bool]]]:
    """Every row of one model, and {section: (file, found)}. `paths`: section → file (missing keys: not produced)."""
    rows, sources = [], {}

    def table(section, **kw):
        path = paths.get(section)
        df = read_csv(path, **kw) if path else None
        sources[section] = (str(path) if path else SECTIONS[section][1].format(model=model), df is not None)
        return df

    if (t := table("refusal", required=("set", "label", "n", "refused", "invalid"), numeric=("n", "refused", "invalid"))) is not None:
        rows += refusal_rows(t)
    t1_num = ("n", "refusal_with_post_%", "refusal_without_post_%", "invalid_with_post", "invalid_without_post")
    if (t := table("table1", required=t1_num[:4], numeric=t1_num)) is not None:
        rows += table1_rows(t)
    if (t := table("clustering", required=("group", "position", "layer", "mean_s", "n"), numeric=("layer", "mean_s", "sd_s", "n"))) is not None:
        rows += clustering_rows(t, middle_layers, where=sources["clustering"][0])
    inv_num = ("n", "harmful_certainly", "harmless_no", "harmful_invalid", "harmless_invalid", "balanced_accuracy")
    if (t := table("inversion", required=("model", "question", "trained_on", *inv_num), numeric=inv_num, booleans=("trained_on",))) is not None:
        rows += inversion_rows(t, model)
    if (t := table("steering", required=("set", "arm", "layer", "n_valid", "no_%"), numeric=("layer", "n_valid", "no_%"))) is not None:
        rows += steering_rows(t)
    bel_num = ("n", *(f"{s}_{x}" for s, r in (("dh", "belief"), ("dr", "behaviour"))
                      for x in ("n_scored", f"{r}_%", f"{r}_lo_%", f"{r}_hi_%")))
    if (t := table("belief", required=("question", "verdict", "set", "group", *bel_num), numeric=bel_num)) is not None:
        rows += belief_rows(t)
    path = paths.get("training")
    rec = read_recipe(path) if path else None
    sources["training"] = (str(path) if path else SECTIONS["training"][1].format(model=model), rec is not None)
    if rec is not None:
        rows += training_rows(rec, where=path)
    if (t := table("claims", required=("claim", "title", "verdict"), numeric=("claim",))) is not None:
        rows += claims_rows(t)
    return [{**r, "model": model} for r in rows], sources


def compare(paths: dict[str, dict[str, str]], middle_layers=(0.28, 0.64)) -> pd.DataFrame:
    """The long table of every model: `paths` = {model: {section: file}} (model order = column order).

    Every model gets every metric any model has in a section: where its file is missing the note says
    `file not found: PATH`, where the file lacks that metric `not in PATH`; a section no model has gives
    one row per model with metric `(no data)`."""
    if not paths:
        raise ValueError("organism_compare: no model to compare (no analysed model has tune_from:)")
    models = list(paths)
    per_model, sources = {}, {}
    for m in models:
        per_model[m], sources[m] = model_rows(m, paths[m], middle_layers)
    out = []
    for section in SECTIONS:
        metrics = list(dict.fromkeys(r["metric"] for m in models for r in per_model[m] if r["section"] == section))
        for metric in metrics or ["(no data)"]:
            for m in models:
                hit = [r for r in per_model[m] if r["section"] == section and r["metric"] == metric]
                if hit:
                    out += hit
                    continue
                path, found = sources[m][section]
                out.append({**_row(section, metric, note=f"not in {path}" if found else f"file not found: {path}"), "model": m})
    df = pd.DataFrame(out, columns=COLUMNS)
    df["n"] = df["n"].astype("Int64")
    # numbers to 6 decimals (clustering scores are ~1e-3), texts as they are
    df["value"] = [round(v, 6) if isinstance(v, float) else v for v in df["value"]]
    for c in ("ci_low", "ci_high"):
        df[c] = pd.to_numeric(df[c]).astype(float).round(6)
    df["note"] = df["note"].fillna("")
    return df


# ------------------------------------------------------------------ markdown
def _fmt(x, section: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "—"
    if isinstance(x, str):
        return x
    x = float(x)
    if x.is_integer() and section != "clustering":
        return str(int(x))
    if section == "clustering":
        return f"{x:+.4f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def cell(row: dict, section: str, note_chars: int = 90) -> str:
    """One markdown cell: value [ci_low–ci_high] (n = …) · note (notes cut to `note_chars`)."""
    text = _fmt(row["value"], section)
    if not pd.isna(row["ci_low"]) and not pd.isna(row["ci_high"]):
        text += f" [{_fmt(row['ci_low'], section)}–{_fmt(row['ci_high'], section)}]"
    if not pd.isna(row["n"]) and section not in ("training", "claims"):
        text += f" (n = {int(row['n'])})"
    note = str(row["note"] or "")
    if note:
        note = note if len(note) <= note_chars else note[: note_chars - 1] + "…"
        text += f" · {note}"
    return io.escape_markdown(text)


def markdown(df: pd.DataFrame) -> str:
    """results/organisms.md: one table per section, one row per metric, one column per model."""
    models = list(dict.fromkeys(df["model"]))
    lines = [f"# Tuned organisms side by side: {', '.join(f'`{m}`' for m in models)}", "",
             "Each cell: value [95 % interval] (n = the count it is over) · note; — = not measured here (the note "
             "says why). Intervals: Wilson for a rate, Newcombe for the Table 1 drop, a conservative mean ± 1.96 SE for "
             "clustering scores. What each row is and where it comes from: docs/organism_compare.md; the same "
             "numbers, one per row: results/organisms.csv.", ""]
    for i, (section, (title, where)) in enumerate(SECTIONS.items(), 1):
        d = df[df["section"] == section]
        if d.empty:
            continue
        lines += [f"## {i}. {title}", "", f"From `{where}`.", ""]
        header = ["metric", *models]
        lines += ["| " + " | ".join(io.escape_markdown(h) for h in header) + " |", "|" + "---|" * len(header)]
        for metric in dict.fromkeys(d["metric"]):
            cells = []
            for m in models:
                hit = d[(d["metric"] == metric) & (d["model"] == m)]
                cells.append(cell(hit.iloc[0].to_dict(), section) if len(hit) else "—")
            lines.append("| " + " | ".join([io.escape_markdown(metric), *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def write(df: pd.DataFrame, csv_path, md_path) -> None:
    """The long table as CSV and its markdown view, replaced together (`io.atomic_group`)."""
    with io.atomic_group(csv_path, md_path) as (tmp_csv, tmp_md):
        df.to_csv(tmp_csv, index=False)
        Path(tmp_md).write_text(markdown(df), encoding="utf-8")
