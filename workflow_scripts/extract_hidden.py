"""Rule extract_hidden: hidden states [n, L+1, positions, d] of one prompt set (safetensors + JSON sidecar)."""

from harmref import activations, datasets, io, models, positions, runlog

log = runlog.start(snakemake)
rt = snakemake.params.runtime
records = datasets.load_prompts(snakemake.input.prompts, snakemake.params.normalise_endings)
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, snakemake.params.system_prompt, date=snakemake.params.template_date,
                                         model=snakemake.wildcards.model)
prompts = [r["prompt"] for r in records]
positions.check_context(tok, fmt, prompts, models.context_length(model, tok), ids=[r["id"] for r in records],
                        source=snakemake.input.prompts)
h, labels, tokens = activations.hidden_states(
    model, tok, fmt, prompts, before=snakemake.params.before,
    batch_size=rt["batch_size"], progress=runlog.progress(len(records), "hidden states"),
)
h = activations.storage_cast(h, snakemake.params.storage_dtype)
meta = {
    "shape": list(h.shape), "dims": ["prompt", "layer", "position", "d_model"],
    "layers": "entry l < L: input of decoder layer l (0 = embeddings); entry L: output of the last layer",
    "positions": labels, "ids": [r["id"] for r in records], "labels": [r["label"] for r in records],
    "categories": [r["category"] for r in records],
    "tokens": tokens, "model": snakemake.wildcards.model, "dtype": str(h.dtype).removeprefix("torch."),
    "system_prompt": snakemake.params.system_prompt, **fmt.sidecar(),
}
io.write_tensors(snakemake.output.tensors, {"hidden": h}, meta)
log.info("hidden %s → %s", tuple(h.shape), snakemake.output.tensors)
