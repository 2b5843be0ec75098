"""Rule generate: greedy replies to one prompt view (checkpointed batch by batch); rule judge labels them."""

from harmref import generation, io, models, prompt_view, runlog

log = runlog.start(snakemake)
rt, p = snakemake.params.runtime, snakemake.params
out = snakemake.output.replies
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
records, view, fmt = prompt_view.load(snakemake.input.view, tok, snakemake.wildcards.model)
prompt_view.check_context(records, view, p.max_new_tokens, snakemake.input.view)
responses = generation.generate(
    model, tok, fmt, [r["prompt"] for r in records], p.max_new_tokens, rt["batch_size"],
    progress=runlog.progress(len(records), "generate"),
    checkpoint=out + ".partial.jsonl",
    checkpoint_key=models.checkpoint_key(snakemake.input.model, model),  # the weights' identity, device, dtype
    tokenized=prompt_view.tokenized(records),
)
rows = [{"id": r["id"], "prompt": r["prompt"], "label": r["label"], "category": r["category"], "response": x}
        for r, x in zip(records, responses)]
io.write_jsonl(out, rows)
io.write_json(snakemake.output.sidecar, {  # what rendered the prompts: the same fingerprint as the hidden states'
    "model": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset, "n": len(rows),
    "system_prompt": view["system_prompt"], "max_new_tokens": p.max_new_tokens, **fmt.sidecar(),
})
io.remove(out + ".partial.jsonl")
log.info("wrote %d replies to %s (rule judge labels them)", len(rows), out)
