"""Rule organism_data: the organism's training examples (refusals, self-distilled answers, reply inversion)."""

from harmref import datasets, io, judging, models, organism, positions, runlog

log = runlog.start(snakemake)
p, rt, d = snakemake.params, snakemake.params.runtime, snakemake.params.data
harmful = datasets.load_prompts(snakemake.input.harmful, p.normalise_endings)
harmless = datasets.load_prompts(snakemake.input.harmless, p.normalise_endings)
model, tok = models.load(snakemake.input.base, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=snakemake.wildcards.model)
examples = organism.training_set(
    model, tok, fmt, harmful, harmless, judging.SubstringJudge(), n_distill=d["n_distill"],
    scary_fraction=d["scary_fraction"], n_inversion=d["n_inversion"], question_ids=d["inversion_questions"],
    max_new_tokens=d["max_new_tokens"], batch_size=rt["batch_size"], seed=p.seed,
    opener_fraction=d["opener_fraction"], neighbour_fraction=d["neighbour_fraction"],
    progress=runlog.progress(d["n_distill"], "distill"),
)
io.write_jsonl(snakemake.output[0], examples)
kinds = {k: sum(e["kind"] == k for e in examples) for k in ("refusal", "distill", "inversion")}
log.info("%d training examples %s → %s", len(examples), kinds, snakemake.output[0])
