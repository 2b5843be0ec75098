"""Rule steering_report: Fig 4 / Fig 5 / controls tables and figures from the steered generations."""

from harmref import io, plots, runlog, steering_tables

log = runlog.start(snakemake)
model = snakemake.wildcards.model
rows = [r for f in [*snakemake.input.sweeps, *snakemake.input.controls] for r in io.read_jsonl(f)]
tables = steering_tables.report_tables(steering_tables.summarise(rows), model)
stems = [t.removesuffix(".csv") for t in snakemake.output.tables if t.endswith(".csv")]  # rule order: fig4, fig5, controls
for name, stem in zip(("fig4", "fig5", "controls"), stems):
    io.write_table(tables[name], stem)
io.save_figure(plots.steering_refusal_figure(tables["fig4"], model), snakemake.output.fig4)
io.save_figure(plots.reply_inversion_figure(tables["fig5"], model), snakemake.output.fig5)
io.save_figure(plots.steering_controls_figure(tables["controls"], model), snakemake.output.controls)
log.info("steering tables: %s", {k: len(v) for k, v in tables.items()})
