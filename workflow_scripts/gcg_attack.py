"""Rule gcg_attack: nanoGCG suffixes optimised against the model itself → a prompt set and a per-goal report."""

from harmref import datasets, gcg, generation, io, judging, models, positions, runlog

log = runlog.start(snakemake)
p, rt, spec = snakemake.params, snakemake.params.runtime, snakemake.params.gcg
out = snakemake.output.prompts
gen = p.generation
judge = judging.make_judge(gen["judge"], **gen.get("ollama_judge", {}))
judge.check()  # an unreachable judge fails now, not after hours of optimisation
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
variants = gcg.variant_prompts(records, spec["optim_str_init"])
replies = {v: generation.generate(model, tok, fmt, xs, gen["max_new_tokens"], rt["batch_size"]) for v, xs in variants.items()}
refused = {v: judge(variants[v], replies[v]) for v in variants}
table = gcg.report(records, replies, refused)
keep = ("id", "prompt", "label", "source", "category", "verbatim", "target", "goal_id", "suffix")
io.write_jsonl(out, [{k: r[k] for k in keep} for r in records])
io.write_table(table, snakemake.output.report[0])
io.remove(out + ".partial.jsonl")
n = len(table)
log.info("refused %d/%d goals alone, %d/%d with the initial suffix, %d/%d with the optimised one; "
         "the reply starts with the target for %d; mean loss %.3f → %.3f", table["refused_plain"].sum(), n,
         table["refused_init"].sum(), n, table["refused_gcg"].sum(), n, table["starts_with_target"].sum(),
         table["initial_loss"].mean(), table["best_loss"].mean())
