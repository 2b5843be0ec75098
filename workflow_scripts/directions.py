"""Rule directions: the four centroids and the harmfulness / refusal directions (paper eq 5, App. B)."""

from harmref import geometry, hidden_sets, io, runlog

log = runlog.start(snakemake)
inp = snakemake.input
sets = {role: hidden_sets.load(inp[f"{role}_hidden"], inp[f"{role}_gen"]) for role in ("harmful", "harmless")}
h = {role: s.hidden for role, s in sets.items()}
refused = {role: s.refused() for role, s in sets.items()}  # no invalid verdicts
meta = sets["harmful"].meta
if sets["harmless"].meta["positions"] != meta["positions"]:
    raise io.DataError(inp.harmless_hidden, f"positions {sets['harmless'].meta['positions']} differ from "
                       f"{inp.harmful_hidden}'s {meta['positions']}", field="positions")
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
