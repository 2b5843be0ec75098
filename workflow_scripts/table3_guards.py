"""Rule table3_guards: accuracy of every guard on every test set (paper Table 3), and AUROC of the scores."""

from harmref import guards, io, runlog

log = runlog.start(snakemake)
inp, p = snakemake.input, snakemake.params
model = snakemake.wildcards.model
text = {}
if "minilm" in inp.keys():
    text["minilm"] = io.read_jsonl(inp.minilm)
if "llama_guard3" in inp.keys():
    text["llama_guard3"] = [{**r, "set": s} for s, path in zip(p.sets, inp.llama_guard3) for r in io.read_jsonl(path)]
pred = guards.merge_predictions(io.read_jsonl(inp.scores), text)
io.write_jsonl(snakemake.output.predictions, pred.drop(columns=["_line"], errors="ignore").to_dict("records"))

table = guards.guard_table(pred, p.tests, model, p.skipped)
io.write_table(table, snakemake.output.table[0], floatfmt=".1f")
log.info("Table 3:\n%s", table.to_string())
for name, reason in p.skipped.items():
    log.warning("%s %s", name, reason)

io.write_table(guards.auroc_table(pred, p.tests, model), snakemake.output.auroc[0], floatfmt=".3f")
