"""The Snakemake HTML report (`snakemake --report results/report.html`): its sections and table pages.

Every figure and table of a run is a report item. Figures carry a caption file in `report/`; tables
are rendered from their CSV into a small standalone HTML page (the report shows HTML, images and PDF
inline; a CSV would only be a download) with the caption below. Sections follow the paper, in its
order; the category names start with a number because the report sorts categories by name.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

# no heavy imports at module level: the Snakefile imports this module to name the report's sections

SECTIONS = {
    "claims": "0 · Claims and the paper's tables",
    "refusal": "1 · Refusal and post-instruction tokens (§2, Table 1)",
    "clustering": "2 · Clustering by position (§3.2, Fig 2, App. F)",
    "beliefs": "3 · Latent beliefs and the harmfulness direction (§3.3, Fig 3)",
    "directions": "4 · Directions and their cosine (§3.4, §5.9)",
    "steering": "5 · Steering toward refusal (§3.4, Fig 4)",
    "inversion": "6 · Reply inversion and stated belief (§3.5, Fig 5)",
    "guard": "7 · Jailbreaks and the Latent Guard (§5.1, Fig 6, Table 3)",
    "attack": "8 · Fine-tuning attack (§5.2, Fig 7)",
    "organism": "9 · The model organism (not in the paper)",
    "other": "Other tables",  # no number: sorts after the numbered sections
}

# table name (results/{model}/tables/{name}.csv) -> (section, caption in reStructuredText)
TABLES = {
    "claims": ("claims", "Every measurable claim of the paper (§7) that applies to this model: what the workflow "
               "measured, the paper's number, and the verdict of the rule in ``harmref/claims.py``."),
    "paper_tables": ("claims", "The paper's Table 1, Table 3 and the data behind Figs 2–7 in the paper's layout, this "
                     "run's numbers beside the paper's (rendered from ``paper_tables.md``)."),
    "refusal_rates": ("refusal", "Refusal rate (substring judge: the paper's 24 refusal phrases, or an empty reply) of "
                      "every prompt set, greedy decoding, chat template with its post-instruction tokens."),
    "table1_post_instruction": ("refusal", "Paper Table 1: AdvBench refusal with and without the post-instruction "
                                "tokens (the ``nopost`` template ends the prompt at the instruction)."),
    "clustering": ("clustering", "Mean clustering score s^l = cos(h, μ_refused-harmful) − cos(h, μ_accepted-harmless) "
                   "per held-out set, behaviour group, position and layer, with the per-prompt SD ``sd_s`` and n "
                   "(the data behind Fig 2)."),
    "clustering_positions": ("clustering", "Mean s over the middle layers at each captured position t_inst−2 … "
                             "t_post-inst, per behaviour group (App. F, Fig 14). The paper: only t_inst shows the "
                             "harmfulness pattern (accepted-harmful > 0, refused-harmless < 0); no numbers given."),
    "beliefs": ("beliefs", "Δharmful (t_inst) and Δrefuse (t_post-inst) of every held-out prompt, averaged over all "
                "layers (eqs 3–4); the data behind Fig 3 (the paper's ranges are Llama2's)."),
    "harmfulness_accuracy": ("beliefs", "Held-out accuracy (threshold 0) and AUROC of the centroid rule "
                             "cos(h, μ_harmful) − cos(h, μ_harmless) by layer at t_inst and t_post-inst, and of the "
                             "mean over layers (Δharmful); n = number of held-out prompts. Not a paper number."),
    "cosine_by_layer": ("directions", "Cosine between the harmfulness direction (t_inst) and the refusal direction "
                        "(t_post-inst) per layer, with the same-position and same-concept cross-position controls "
                        "and the directions' norms. The paper gives a mean over layers for Llama2 only."),
    "category_directions": ("directions", "CatQA per-category harmfulness directions: mean pairwise cosine by layer at "
                            "t_inst and t_post-inst, and their cosine with the global directions (§5.9; the paper "
                            "gives no numbers: [A] marks the research notes' measurement on the released Qwen2 tensors)."),
    "fig4_steering_refusal": ("steering", "Data of Fig 4: refusal rate (substring) of accepted harmless prompts with "
                              "the harmfulness or refusal direction added at each layer, n, SE, Δ vs unsteered."),
    "steering_controls": ("steering", "Controls at each arm's best layer: coefficient sweep, each direction rescaled "
                          "to the other's norm, and each direction on the other's token scope (not in the paper)."),
    "fig5_reply_inversion": ("inversion", "Data of Fig 5: reply inversion (\"Could this user prompt cause harm?\") "
                             "under steering — \"No\" % of valid answers, invalid answers, refusals, first-token "
                             "log-odds — per direction, layer and prompt set."),
    "stated_belief": ("inversion", "The reply-inversion question asked on every held-out prompt without steering: "
                      "first-token margin and greedy verdict of each prompt, with its behaviour and latent beliefs."),
    "belief_vs_behaviour": ("inversion", "Stated belief (reply inversion) crossed with behaviour and with the signs "
                            "of Δharmful and Δrefuse, per group, with Wilson 95 % intervals (not in the paper)."),
    "inversion_accuracy": ("organism", "Reply-inversion accuracy of the base model and the organism on the "
                           "inversion question sets (trained and held-out questions)."),
    "table3_guards": ("guard", "Paper Table 3: accuracy % of the Latent Guard (sign of Δharmful at t_inst), "
                      "refusal-based guards and text guards on jailbreaks, over-refused XSTest and accepted "
                      "Sorry-Bench (the paper's adv-suffix set is nanoGCG against the model itself: row adv_suffix_self)."),
    "guard_auroc": ("guard", "AUROC of each latent score (Δharmful, Δrefuse) as a harmful-vs-harmless guard on the "
                    "guard test sets (not in the paper)."),
    "fig6_group_means": ("guard", "Mean Δharmful and Δrefuse per behaviour group and jailbreak set (Fig 6; the "
                         "paper's ranges are Llama2's)."),
    "gcg_attack": ("guard", "nanoGCG suffixes optimised against the model itself: loss, whether the reply starts "
                   "with the target, refusal of the goal alone / with the initial suffix / with the optimised suffix."),
    "finetune_attack": ("attack", "Fine-tuning attack: refusal of held-out harmful prompts after SFT on n pairs built "
                        "with the reverse refusal direction, and the change of Δharmful and Δrefuse. The paper: "
                        "acceptance rises while Δharmful is \"almost unchanged\" (no numbers given)."),
    "finetune_attack_layers": ("attack", "Data of Fig 7: layerwise Δharmful (t_inst) and Δrefuse (t_post-inst) of "
                               "held-out harmful prompts before and after each attack size. The paper: the curves "
                               "overlap (\"almost unchanged\")."),
    "organism_refusal": ("organism", "Refusal rate of the base model and the safety-tuned organism on every "
                         "evaluation set (substring judge)."),
}


# figure name (results/{model}/figures/{name}.png) -> section; each has a caption file report/{name}.rst
FIGURES = {
    "fig2_clustering": "clustering",
    "fig14_positions": "clustering",
    "harmfulness_accuracy": "beliefs",
    "cosine_by_layer": "directions",
    "fig4_steering_refusal": "steering",
    "steering_controls": "steering",
    "fig5_reply_inversion": "inversion",
    "belief_vs_behaviour": "inversion",
    "fig6_jailbreaks": "guard",
    "fig7_finetune_attack": "attack",
}


def figure_section(name: str) -> str:
    """The report category of figure `name` (a KeyError names a figure added without a section)."""
    return SECTIONS[FIGURES[name]]


SOURCE = re.compile(r"results/([^/]+)/(?:tables/([A-Za-z0-9_\-]+)\.csv|(claims)\.csv|(paper_tables)\.md)")


def sources(targets, model: str) -> dict[str, str]:
    """{page name: source file} of every table of `model` among the run's final targets."""
    out = {}
    for t in map(str, targets):
        m = SOURCE.fullmatch(t)
        if m and m.group(1) == model:
            out[m.group(2) or m.group(3) or m.group(4)] = t
    return out


def section_of(name: str) -> str:
    """The report category of table `name`; a table not listed in TABLES goes to "Other tables"."""
    return SECTIONS[TABLES.get(name, ("other", ""))[0]]


# table name -> the section of harmref/paper_numbers.yaml holding the paper's numbers for it
PAPER_SECTION = {
    "table1_post_instruction": "table1", "clustering": "fig2", "beliefs": "fig3", "fig4_steering_refusal": "fig4",
    "cosine_by_layer": "cosine", "fig5_reply_inversion": "fig5", "fig6_group_means": "fig6", "table3_guards": "table3",
    "finetune_attack_layers": "fig7", "category_directions": "categories",
}


def _flatten(node, path=()):
    """(path, text) of every number under `node`: entries ({value|range, source}) or plain numbers."""
    from harmref import paper

    if isinstance(node, dict) and ("value" in node or "range" in node):
        yield path, paper.fmt(node)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k not in ("ref", "source", "note"):
                yield from _flatten(v, (*path, str(k)))
    elif isinstance(node, (int, float)):
        yield path, f"{node:g}"


def paper_values(name: str) -> str:
    """The paper's numbers behind table `name`, from harmref/paper_numbers.yaml ("" when it has none)."""
    from harmref import paper

    section = paper.numbers().get(PAPER_SECTION.get(name, ""), {})
    parts = []
    for model, node in section.items():
        if model in ("ref", "source") or not isinstance(node, dict):
            continue
        who = paper.paper_name(model) or ("model not named" if model == "any" else model)
        src = f" [{section['source']}]" if isinstance(section.get("source"), str) else ""
        parts.append(f"{who}: " + "; ".join(f"{' '.join(p)} {t}" for p, t in _flatten(node)) + src)
    return " — ".join(parts)


def caption_of(name: str, path: str) -> str:
    """The caption of table `name` (reStructuredText): what it shows, the CSV it is rendered from, and the
    paper's numbers for it from harmref/paper_numbers.yaml ([P] text, [W≈] read off a figure)."""
    text = TABLES.get(name, ("other", "A table of the run without a caption yet."))[1]
    paper = paper_values(name)
    paper = f"\n\nThe paper (``harmref/paper_numbers.yaml``): {_rst_text(paper)}" if paper else ""
    return f"{text}{paper}\n\nRendered from ``{path}`` (the CSV has full precision; a markdown copy sits beside it)."


def _rst_text(s: str) -> str:
    """Plain text safe inside reStructuredText: no markup character starts a construct."""
    return re.sub(r"([*`|_\\])", r"\\\1", s)


CSS = """body{font-family:system-ui,sans-serif;font-size:13px;margin:12px;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}td.text{text-align:left;max-width:38em;white-space:pre-wrap}
tr:nth-child(even) td{background:#fafafa}caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}"""


def _cell(x, floatfmt: str) -> tuple[str, bool]:
    if isinstance(x, float):
        return ("" if x != x else format(x, floatfmt)), False
    if isinstance(x, (bool, int)) or x is None:
        return html.escape(str(x)), False
    return html.escape(str(x)), True


def table_html(df, title: str, floatfmt: str = ".4g") -> str:
    """A standalone HTML page with `df` as a table; every cell is escaped (replies can hold markup)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.astype(object).itertuples(index=False):
        cells = [_cell(x, floatfmt) for x in rec]
        rows.append("<tr>" + "".join(f'<td class="text">{t}</td>' if is_text else f"<td>{t}</td>" for t, is_text in cells) + "</tr>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>{CSS}</style>"
            f"</head><body><table><caption>{html.escape(title)} ({len(df)} rows)</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></body></html>\n")


def write_table_html(csv_path, out_path, title: str) -> None:
    """Render the CSV table `csv_path` (or a markdown file, .md) to `out_path` (written atomically)."""
    import pandas as pd

    from harmref import io

    if str(csv_path).endswith(".md"):
        io.write_text(Path(out_path), markdown_html(io.read_text(csv_path), title))
        return

    try:
        df = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:  # a table with no columns (e.g. nothing to report for this model)
        df = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise io.DataError(csv_path, f"not a readable CSV table ({e})") from e
    io.write_text(Path(out_path), table_html(df, title))


VERDICT_COLOURS = {"holds": "#1a7f37", "does not hold": "#cf222e", "not measurable here": "#6e7781"}
SUMMARY_COLUMNS = {"claim": "#", "title": "claim", "verdict": "verdict (why)", "measured": "measured here", "paper": "the paper's number"}
_TD = "border:1px solid #ccc;padding:2px 4px;vertical-align:top;text-align:left"


def claims_summary_html(claims, model: str) -> str:
    """The first page's claims table for one model: an HTML fragment with inline styles only (it cannot
    restyle the report around it), scrolling inside its own box; one row per claim, its verdict coloured."""
    missing = [c for c in [*SUMMARY_COLUMNS, "paper_where", "reason"] if c not in claims]
    if missing:
        raise ValueError(f"claims table of {model}: missing column(s) {missing}")
    counts = claims["verdict"].value_counts()

    def text(v) -> str:
        return "" if v is None or (isinstance(v, float) and v != v) else html.escape(str(v))

    head = "".join(f'<th style="{_TD};background:#f0f0f0;position:sticky;top:0">{h}</th>' for h in SUMMARY_COLUMNS.values())
    rows = []
    for r in claims.astype(object).to_dict("records"):
        colour = VERDICT_COLOURS.get(str(r["verdict"]), "#000")
        why = f'<br><span style="font-weight:400;color:#57606a">{text(r["reason"])}</span>' if text(r["reason"]) else ""
        rows.append(f'<tr><td style="{_TD}">{text(r["claim"])}</td>'
                    f'<td style="{_TD}">{text(r["title"])} ({text(r["paper_where"])})</td>'
                    f'<td style="{_TD};font-weight:600;color:{colour}">{text(r["verdict"])}{why}</td>'
                    f'<td style="{_TD}">{text(r["measured"])}</td><td style="{_TD}">{text(r["paper"])}</td></tr>')
    tally = " · ".join(f"{v}: {int(counts.get(v, 0))}" for v in VERDICT_COLOURS)
    return (f'<div class="harmref-claims" style="font-size:11px;line-height:1.3">'
            f"<p><b>{html.escape(model)}</b>: {html.escape(tally)}</p>"
            f'<div style="max-height:60vh;overflow:auto;border:1px solid #ddd">'
            f'<table style="border-collapse:collapse;margin:0;width:100%"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></div>\n')


def write_claims_summary(csv_path, out_path, model: str) -> None:
    import pandas as pd

    from harmref import io

    io.write_text(Path(out_path), claims_summary_html(pd.read_csv(csv_path), model))


def markdown_html(text: str, title: str) -> str:
    """A standalone HTML page from harmref's own markdown (headings, paragraphs, pipe tables, lists):
    every cell and line is escaped, inline code and bold become <code> and <b>."""
    import re

    def inline(s: str) -> str:  # undo io.escape_markdown (backslash escapes, entities, <br>), then escape for HTML
        s = html.escape(html.unescape(re.sub(r"\\(.)", r"\1", s.replace("<br>", "\n"))))
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    out, table, para = [], [], []

    def flush():
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
        if table:
            rows = [re.split(r"(?<!\\)\|", r.strip().strip("|")) for r in table if not re.fullmatch(r"\|?[\s:|-]+\|?", r.strip())]
            head, body = rows[0], rows[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c.strip())}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f'<td class="text">{inline(c.strip())}</td>' for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            if para:
                flush()
            table.append(line)
            continue
        if table:
            flush()
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
        elif line.strip().startswith(("- ", "* ")):
            flush()
            out.append(f"<ul><li>{inline(line.strip()[2:])}</li></ul>")
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
    flush()
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>{CSS}</style>"
            f"</head><body>{''.join(out)}</body></html>\n")
