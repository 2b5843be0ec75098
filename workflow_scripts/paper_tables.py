"""Rules paper_tables / paper_tables_all: the paper's tables and figure data, ours beside the paper's.

Per model: results/{model}/paper_tables.md from its tables; all models: results/paper_tables.md with
each section's rows for every analysis model, as the paper shows its three models.
"""

from pathlib import Path

import pandas as pd

from harmref import io, paper_layout, runlog

log = runlog.start(snakemake)


def model_sections(inputs: dict, model: str) -> dict:
    tables = {k: pd.read_csv(v) for k, v in inputs.items() if k != "claims"}
    return paper_layout.sections(tables, model)


if snakemake.rule == "paper_tables":
    model = snakemake.wildcards.model
    inputs = {k: snakemake.input[k] for k in snakemake.input.keys()}
    per_model = {model: model_sections(inputs, model)}
    claims = {model: pd.read_csv(inputs["claims"])}
else:
    # each model's sections again from its tables (the per-model markdown is for reading, not parsing)
    per_model, claims = {}, {}
    for model, claims_csv in zip(snakemake.params.models, snakemake.input.claims):
        root = Path(claims_csv).parent
        inputs = {p.stem: p for p in sorted((root / "tables").glob("*.csv"))}
        per_model[model] = model_sections(inputs, model)
        claims[model] = pd.read_csv(claims_csv)
io.write_text(snakemake.output[0], paper_layout.render(per_model, claims) + "\n")
log.info("paper tables for %s", list(per_model))
