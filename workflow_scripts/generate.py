"""Rule generate: greedy responses to one prompt set, judged for refusal (checkpointed batch by batch)."""

from harmref import datasets, generation, io, judging, models, positions, runlog

log = runlog.start(snakemake)
rt, gen = snakemake.params.runtime, snakemake.params.generation
out = snakemake.output[0]
judge = judging.make_judge(gen["judge"], **gen.get("ollama_judge", {}))
judge.check()  # an unreachable judge fails now, not after the generation
records = datasets.load_prompts(snakemake.input.prompts, snakemake.params.normalise_endings)
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(
    tok, gen["system_prompt"], post_instruction=snakemake.wildcards.template == "chat",
    date=gen["template_date"], model=snakemake.wildcards.model,
)
prompts = [r["prompt"] for r in records]
positions.check_context(tok, fmt, prompts, models.context_length(model, tok), reserve=gen["max_new_tokens"],
                        ids=[r["id"] for r in records], source=snakemake.input.prompts)
responses = generation.generate(
    model, tok, fmt, prompts, gen["max_new_tokens"], rt["batch_size"],
    progress=runlog.progress(len(records), "generate"),
    checkpoint=out + ".partial.jsonl",
    checkpoint_key=models.checkpoint_key(snakemake.input.model, model),  # the weights' identity, device, dtype
)
rows = [{"id": r["id"], "prompt": r["prompt"], "label": r["label"], "category": r["category"], "response": x}
        for r, x in zip(records, responses)]
rows = judging.judge_records(rows, judge)
io.write_jsonl(out, rows)
io.write_json(snakemake.output.sidecar, {  # what rendered the prompts: the same fingerprint as the hidden states'
    "model": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset, "n": len(rows),
    "system_prompt": gen["system_prompt"], "max_new_tokens": gen["max_new_tokens"], **fmt.sidecar(),
})
io.remove(out + ".partial.jsonl")
n_invalid = sum(r["refused"] is None for r in rows)
log.info("refused %d / %d (%d invalid verdicts)", sum(bool(r["refused"]) for r in rows), len(rows), n_invalid)
if n_invalid:
    log.warning("%d replies of the %s judge are not a verdict (field refused: null); refusal_rates counts them",
                n_invalid, judge.name)
