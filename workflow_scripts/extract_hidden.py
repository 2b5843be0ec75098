"""Rule extract_hidden: hidden states [n, L+1, positions, d] of one prompt view (safetensors + JSON sidecar)."""

from harmref import activations, io, models, prompt_view, runlog

log = runlog.start(snakemake)
rt = snakemake.params.runtime
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
records, view, fmt = prompt_view.load(snakemake.input.view, tok, snakemake.wildcards.model)
h, labels, tokens = activations.hidden_states(
    model, tok, fmt, [r["prompt"] for r in records], before=snakemake.params.before,
    batch_size=rt["batch_size"], progress=runlog.progress(len(records), "hidden states"),
    tokenized=prompt_view.tokenized(records),
)
h = activations.storage_cast(h, snakemake.params.storage_dtype)
meta = {
    "shape": list(h.shape), "dims": ["prompt", "layer", "position", "d_model"],
    "layers": "entry l < L: input of decoder layer l (0 = embeddings); entry L: output of the last layer",
    "positions": labels, "ids": [r["id"] for r in records], "labels": [r["label"] for r in records],
    "categories": [r["category"] for r in records],
    "tokens": tokens, "model": snakemake.wildcards.model, "dtype": str(h.dtype).removeprefix("torch."),
    "system_prompt": view["system_prompt"], **fmt.sidecar(),
}
io.write_tensors(snakemake.output.tensors, {"hidden": h}, meta)
log.info("hidden %s → %s", tuple(h.shape), snakemake.output.tensors)
