"""Rule latent_guard: Δharmful (t_inst) and Δrefuse (t_post-inst) of every test prompt, and the guards' flags."""

import math

import torch

from harmref import guards, io, latent_guard, runlog

log = runlog.start(snakemake)
inp, p = snakemake.input, snakemake.params
cents = io.read_tensors(inp.directions)
cmeta = io.read_sidecar(inp.directions)
inst, post = cmeta["inst_index"], len(cmeta["positions"]) - 1


def load(hidden_path, gens_path):
    meta = io.read_sidecar(hidden_path)
    if meta["positions"] != cmeta["positions"]:
        raise ValueError(f"{hidden_path}: positions {meta['positions']} differ from the centroids' {cmeta['positions']}")
    by_id = {r["id"]: r for r in io.read_jsonl(gens_path)}
    return io.read_tensors(hidden_path)["hidden"], meta["ids"], by_id


# the paper's augmented harmful pool (App. B), on top of the directions rule's harmful centroid
extra = []
for spec, hp, gp in zip(p.augment, inp.augment_hidden, inp.augment_gens):
    h, ids, by_id = load(hp, gp)
    keep = {r["id"] for r in guards.select_test_set([by_id[i] for i in ids], spec["keep"])}
    extra.append(h[torch.tensor([i in keep for i in ids], dtype=torch.bool)])
    log.info("augment: %d %s prompts of %s added to the harmful centroid", len(keep), spec["keep"], spec["set"])
n_harmful = cmeta["counts"]["harmful"]["n"]
if extra:
    cents["mu_harmful"] = latent_guard.augment_centroid(cents["mu_harmful"], n_harmful, torch.cat(extra)).float()

rows, metrics = [], {}
for name, hp, gp in zip(p.sets, inp.hidden, inp.gens):
    h, ids, by_id = load(hp, gp)
    s = latent_guard.score_hidden(h, cents, inst, post, layers=p.layers, threshold=p.threshold)
    set_rows = guards.score_records(name, ids, by_id, s["delta_harmful"], s["delta_refuse"], p.threshold)
    metrics[name] = latent_guard.guard_metrics(s["delta_harmful"], [r["label"] == "harmful" for r in set_rows], p.threshold)
    rows += set_rows
if all(r["delta_refuse"] is None for r in rows):
    log.warning("Δrefuse undefined: the model refused none (or all) of the training prompts; refusal_direction not scored")
metrics["all"] = latent_guard.guard_metrics([r["delta_harmful"] for r in rows], [r["label"] == "harmful" for r in rows], p.threshold)
io.write_jsonl(snakemake.output.scores, rows)
keys = ("mu_harmful", "mu_harmless", "mu_refused", "mu_accepted")
io.write_tensors(snakemake.output.centroids, {k: cents[k].float() for k in keys}, {
    **{k: cmeta[k] for k in ("positions", "inst_index")}, "counts": cmeta["counts"],
    "augment": p.augment, "n_harmful_augmented": n_harmful + sum(len(e) for e in extra),
})
finite = {s: {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()} for s, m in metrics.items()}
io.write_json(snakemake.output.metrics, {
    "threshold": p.threshold, "layers": p.layers, "n_harmful_train": n_harmful,
    "n_augment": sum(len(e) for e in extra), "by_set": finite, "note": "null = undefined (one class absent)",
})
log.info("Latent Guard: %s", metrics["all"])
