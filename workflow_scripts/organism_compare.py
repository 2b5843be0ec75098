"""Rule organism_compare: every analysed tuned organism side by side → results/organisms.{csv,md} (no model loaded)."""

from harmref import organism_compare, runlog

log = runlog.start(snakemake)
inp, p = snakemake.input, snakemake.params
# each named input lists one file per model, in params.models order (rules/compare.smk)
paths = {}
for i, model in enumerate(p.models):
    paths[model] = {}
    for section in organism_compare.SECTIONS:
        files = inp[section]
        files = [files] if isinstance(files, str) else list(files)
        if len(files) != len(p.models):
            raise ValueError(f"rule organism_compare: input {section} has {len(files)} files for {len(p.models)} models")
        paths[model][section] = files[i]
table = organism_compare.compare(paths, middle_layers=p.middle_layers)
organism_compare.write(table, snakemake.output.csv, snakemake.output.md)
missing = table[table["note"].str.startswith("file not found")]
if len(missing):
    log.warning("%d rows without their file: %s", len(missing), sorted(set(missing["note"])))
log.info("%d rows for %d models: %s", len(table), len(p.models), ", ".join(p.models))
