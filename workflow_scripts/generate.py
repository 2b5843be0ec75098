"""Rule generate: greedy replies to one prompt set (checkpointed batch by batch); rule judge labels them."""

from harmref import datasets, generation, io, models, positions, runlog

log = runlog.start(snakemake)
rt, p = snakemake.params.runtime, snakemake.params
out = snakemake.output.replies
records = datasets.load_prompts(snakemake.input.prompts, p.normalise_endings)
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(
    tok, p.system_prompt, post_instruction=snakemake.wildcards.template == "chat",
    date=p.template_date, model=snakemake.wildcards.model,
)
prompts = [r["prompt"] for r in records]
positions.check_context(tok, fmt, prompts, models.context_length(model, tok), reserve=p.max_new_tokens,
                        ids=[r["id"] for r in records], source=snakemake.input.prompts)
responses = generation.generate(
    model, tok, fmt, prompts, p.max_new_tokens, rt["batch_size"],
    progress=runlog.progress(len(records), "generate"),
    checkpoint=out + ".partial.jsonl",
    checkpoint_key=models.checkpoint_key(snakemake.input.model, model),  # the weights' identity, device, dtype
)
rows = [{"id": r["id"], "prompt": r["prompt"], "label": r["label"], "category": r["category"], "response": x}
        for r, x in zip(records, responses)]
io.write_jsonl(out, rows)
io.write_json(snakemake.output.sidecar, {  # what rendered the prompts: the same fingerprint as the hidden states'
    "model": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset, "n": len(rows),
    "system_prompt": p.system_prompt, "max_new_tokens": p.max_new_tokens, **fmt.sidecar(),
})
io.remove(out + ".partial.jsonl")
log.info("wrote %d replies to %s (rule judge labels them)", len(rows), out)
