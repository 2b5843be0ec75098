"""Rule results_index: results/index.md, every output of the run on one line with its paper section."""

from pathlib import Path

from harmref import io, paper_layout, runlog

log = runlog.start(snakemake)
outputs = list(snakemake.input)
listed = set(outputs)
# folders holding intermediate outputs (generations, hidden states, directions, model cards, ...): one line each
folders = {}
for top in sorted(p for p in Path("results").iterdir() if p.is_dir()):
    subs = [d for d in sorted(top.iterdir()) if d.is_dir()] or [top]
    for d in subs:
        n = sum(1 for f in d.rglob("*") if f.is_file() and str(f) not in listed)
        if n:
            folders[f"{d}/"] = n
io.write_text(snakemake.output[0], paper_layout.results_index(outputs, folders))
log.info("index of %d outputs and %d folders of intermediate files", len(outputs), len(folders))
