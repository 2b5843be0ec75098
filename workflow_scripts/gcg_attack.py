"""Rule gcg_attack: nanoGCG suffixes optimised against the model itself → a prompt set (one record per goal)."""

from harmref import datasets, gcg, io, models, runlog

log = runlog.start(snakemake)
p, rt, spec = snakemake.params, snakemake.params.runtime, snakemake.params.gcg
out = snakemake.output[0]
goals = datasets.load_prompts(snakemake.input.goals, p.normalise_endings)[: spec["n"]]
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
for param in model.parameters():
    param.requires_grad_(False)  # gradients are taken w.r.t. the one-hot suffix only
records = gcg.attack_set(
    model, tok, goals, spec, p.seed, p.system_prompt, template_date=p.template_date,
    checkpoint=out + ".partial.jsonl",
    checkpoint_key=models.checkpoint_key(snakemake.input.model, model),  # the weights' identity, device, dtype
    progress=runlog.progress(len(goals), "nanoGCG goals"),
)
io.write_jsonl(out, records)
io.remove(out + ".partial.jsonl")
log.info("%d suffixes; greedy reply is the target for %d (whole-prompt loss %.3f on average)",
         len(records), sum(r["exact"] for r in records), sum(r["prompt_loss"] for r in records) / len(records))
