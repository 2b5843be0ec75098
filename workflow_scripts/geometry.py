"""Rule geometry: cosines, clustering (Fig 2, Fig 14), beliefs, held-out accuracy, per-category directions."""

from pathlib import Path

import torch

from harmref import geometry, hidden_sets, io, plots, runlog

log = runlog.start(snakemake)
model = snakemake.wildcards.model
d = io.read_tensors(snakemake.input.directions)
meta = io.read_sidecar(snakemake.input.directions)
inst, positions = meta["inst_index"], meta["positions"]
out = {Path(p).stem: p for p in snakemake.output.tables}
fig = {Path(p).stem: p for p in snakemake.output.figures}

evals = []
for name, hp, gp in zip(snakemake.params.eval_sets, snakemake.input.hidden, snakemake.input.gens):
    hs = hidden_sets.load(hp, gp, positions)
    evals.append((name, hs.hidden, hs.labels, hs.refused(), hs.ids))

cos = geometry.cosine_table(d, inst)
io.write_table(cos, out["cosine_by_layer"])
clust = geometry.clustering_table([e[:4] for e in evals], d, positions)
io.write_table(clust, out["clustering"], floatfmt=".4f")
pooled = geometry.pooled_clustering(clust)
mid = geometry.middle_layers(d["harmfulness"].shape[0], snakemake.params.middle_layers)
pos_table = geometry.position_table(pooled, mid, positions)
io.write_table(pos_table, out["clustering_positions"], floatfmt=".4f")
io.write_table(geometry.beliefs(evals, d, inst), out["beliefs"], floatfmt=".4f")

held = [e for e in evals if e[0] in ("harmful_test", "harmless_test")] or evals
h = torch.cat([e[1] for e in held])
is_harmful = torch.tensor([l == "harmful" for e in held for l in e[2]])
acc = geometry.harmfulness_accuracy(h, is_harmful, d, inst)
io.write_table(acc, out["harmfulness_accuracy"])

cat_dirs = {}
if "category" in snakemake.input.keys():
    side = io.read_sidecar(snakemake.input.category)
    cat_dirs = geometry.category_directions(
        io.read_tensors(snakemake.input.category)["hidden"], side["categories"], d["mu_harmless"], inst
    )
io.write_table(geometry.category_table(cat_dirs, d["harmfulness"], d["refusal"]), out["category_directions"])

io.save_figure(plots.clustering_figure(pooled, model, positions[-1]), fig["fig2_clustering"])
io.save_figure(plots.cosine_figure(cos, model), fig["cosine_by_layer"])
io.save_figure(plots.positions_figure(pos_table, model, mid), fig["fig14_positions"])
io.save_figure(plots.accuracy_figure(acc, model), fig["harmfulness_accuracy"])
log.info("geometry written for %s", model)
