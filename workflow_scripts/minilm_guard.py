"""Rule minilm_guard: MiniLM sentence embeddings + logistic regression, trained on the guard's training sets."""

from harmref import guards, io, runlog

log = runlog.start(snakemake)
train = [r for path in snakemake.input.train for r in io.read_jsonl(path)]
guard = guards.MiniLMGuard(C=snakemake.params.C, seed=snakemake.params.seed)
guard.fit([r["prompt"] for r in train], [r["label"] == "harmful" for r in train])
log.info("trained on %d prompts (%d harmful)", len(train), sum(r["label"] == "harmful" for r in train))
rows = []
for name, path in zip(snakemake.params.sets, snakemake.input.tests):
    recs = io.read_jsonl(path)
    p = guard.decision_function([r["prompt"] for r in recs])
    rows += [{"set": name, "id": r["id"], "minilm_score": float(x), "minilm": bool(x >= 0.5)} for r, x in zip(recs, p)]
    log.info("%s: %d / %d unsafe", name, sum(x >= 0.5 for x in p), len(recs))
io.write_jsonl(snakemake.output[0], rows)
