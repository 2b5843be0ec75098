"""Rule results_index: results/index.md, every output of the run on one line with its paper section."""

from harmref import io, paper_layout, runlog

log = runlog.start(snakemake)
text = paper_layout.results_index(list(snakemake.input))
io.write_text(snakemake.output[0], text)
log.info("index of %d outputs", len(snakemake.input))
