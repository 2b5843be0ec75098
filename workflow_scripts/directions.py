"""Rule directions: the four centroids and the harmfulness / refusal directions (paper eq 5, App. B)."""

from harmref import geometry, io, judging, runlog

log = runlog.start(snakemake)
inp = snakemake.input
h, refused = {}, {}
for role in ("harmful", "harmless"):
    h[role] = io.read_tensors(inp[f"{role}_hidden"])["hidden"]
    gens = io.read_jsonl(inp[f"{role}_gen"])
    by_id = dict(zip((r["id"] for r in gens), judging.refused_flags(gens, inp[f"{role}_gen"])))  # no invalid verdicts
    refused[role] = [by_id[i] for i in io.read_sidecar(inp[f"{role}_hidden"])["ids"]]
meta = io.read_sidecar(inp.harmful_hidden)
inst = meta["positions"].index("t_inst")
cents, notes = geometry.fit(h["harmful"], refused["harmful"], h["harmless"], refused["harmless"],
                            snakemake.params.mode, snakemake.params.min_group)
tensors = {**{k: v.float() for k, v in cents.items()}, **{k: v.float() for k, v in geometry.directions(cents, inst).items()}}
io.write_tensors(snakemake.output[0], tensors, {
    "positions": meta["positions"], "inst_index": inst, "counts": notes, "mode": snakemake.params.mode,
    "shapes": {k: list(v.shape) for k, v in tensors.items()},
    "layers": "row l < L: input of decoder layer l (0 = embeddings); row L: output of the last layer",
})
log.info("centroid counts: %s", notes)
