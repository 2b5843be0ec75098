"""The organism's evaluation (rule organism_eval): refusal per held-out set, base vs organism, and side-by-side answers.

No model is loaded: the refusal rates come from both models' judged chat generations (rules
generate, judge), the answers from their organism_replies. Reply-inversion accuracy, the third
table of the rule, is `inversion.accuracy_table`.
"""

from __future__ import annotations

import pandas as pd

from .tables import rate_row


def refusal_comparison(base: dict[str, list[dict]], organism: dict[str, list[dict]], targets: dict | None = None) -> pd.DataFrame:
    """Refusal rate per held-out set, base vs organism (over valid verdicts; invalid ones counted); `targets`: {set: {min|max: rate}}."""
    out = []
    for name, rows in organism.items():
        b, o = rate_row(base.get(name, [])), rate_row(rows)
        row = {"set": name, "label": "/".join(sorted({r["label"] for r in rows})), "n": o["n"],
               "base_refused": b["refused"], "base_rate": b["rate"], "organism_refused": o["refused"],
               "organism_rate": o["rate"], "organism_se": o["se"], "base_invalid": b["invalid"],
               "organism_invalid": o["invalid"], "target": "", "met": ""}
        t = (targets or {}).get(name)
        if t:
            ok = (o["rate"] >= t["min"]) if "min" in t else (o["rate"] <= t["max"])
            row["target"] = f"≥ {t['min']:.2f}" if "min" in t else f"≤ {t['max']:.2f}"
            row["met"] = "yes" if ok else "no"
        out.append(row)
    return pd.DataFrame(out)


def samples_markdown(records: list[dict], answers: dict[str, list[str]], title: str) -> str:
    """Side-by-side answers of several models to the same prompts, as markdown.

    Prompts and replies are escaped (`io.escape_markdown`): HTML or markdown in them shows as text.
    """
    from .io import escape_markdown as esc

    lines = [f"# {esc(title)}", ""]
    for k, r in enumerate(records):
        lines += [f"## {k + 1}. {esc(r['prompt'], ' ')}", f"*set: {esc(r.get('set', ''))}, label: {esc(r['label'])}*", ""]
        for model, texts in answers.items():
            lines += [f"**{esc(model)}:**", "", "> " + esc(texts[k], "\n> "), ""]
    return "\n".join(lines)
