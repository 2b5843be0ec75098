"""Rule gcg_attack: nanoGCG suffixes optimised against the model itself → a prompt set and a per-goal report."""

from harmref import datasets, gcg, generation, io, models, positions, runlog

log = runlog.start(snakemake)
p, rt, spec = snakemake.params, snakemake.params.runtime, snakemake.params.gcg
out = snakemake.output.prompts
goals = datasets.load_prompts(snakemake.input.goals, p.normalise_endings)[: spec["n"]]
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"])
for param in model.parameters():
    param.requires_grad_(False)  # gradients are taken w.r.t. the one-hot suffix only
records = gcg.attack_set(
    model, tok, goals, spec, p.seed, p.system_prompt,
    checkpoint=out + ".partial.jsonl",
    checkpoint_key=[io.sha256_file(snakemake.input.model), str(model.device), str(model.dtype)],
    progress=runlog.progress(len(goals), "nanoGCG goals"),
)
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt)
n_target = max(len(tok(r["target"], add_special_tokens=False)["input_ids"]) for r in records)
greedy = generation.generate(model, tok, fmt, [r["prompt"] for r in records], n_target + 2, rt["batch_size"])
table = gcg.report(records, greedy)
keep = ("id", "prompt", "label", "source", "category", "verbatim", "target", "goal_id", "suffix")
io.write_jsonl(out, [{k: r[k] for k in keep} for r in records])
io.write_table(table, snakemake.output.report[0])
io.remove(out + ".partial.jsonl")
log.info("%d suffixes; greedy reply starts with the target for %d; mean best loss %.3f",
         len(table), int(table["starts_with_target"].sum()), table["best_loss"].mean())
