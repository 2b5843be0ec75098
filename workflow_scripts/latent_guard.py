"""Rule latent_guard: Δharmful (t_inst) and Δrefuse (t_post-inst) of every test prompt, the guards' flags,
and the guard artefact (guard.json beside centroids.safetensors) that `harmref guard check` scores raw text with."""

import math

import torch

from harmref import guards, hidden_sets, io, latent_guard, models, positions, runlog

log = runlog.start(snakemake)
inp, p = snakemake.input, snakemake.params
cents = io.read_tensors(inp.directions)
cmeta = io.read_sidecar(inp.directions)
inst, post = cmeta["inst_index"], len(cmeta["positions"]) - 1


def load(hidden_path, gens_path):
    hs = hidden_sets.load(hidden_path, gens_path, cmeta["positions"], valid_verdicts=False)  # own_refusal: None
    return hs.hidden, hs.ids, hs.by_id


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

# the artefact: which model (weights sha256, identity), template, endings, positions, layers, threshold, training sets
card = models.read_card(inp.model)
tok = latent_guard.load_tokenizer(card)
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=snakemake.wildcards.model)
hmeta = io.read_sidecar(inp.hidden[0]) if inp.hidden else {}
if hmeta.get("template_fingerprint") not in (None, latent_guard.template_fingerprint(fmt)):
    raise ValueError(f"{inp.hidden[0]}: hidden states rendered with template {hmeta['template_fingerprint'][:16]}…, "
                     f"but the model's template now renders {latent_guard.template_fingerprint(fmt)[:16]}…; rerun extract_hidden")
rt = p.runtime
dev = models.resolve_device(rt["device"])
d = p.directions
training = {
    role: latent_guard.file_record(path, cmeta["counts"][role]["n"], set=d[role], fallback=cmeta["counts"][role].get("fallback"))
    for role, path in zip(("harmful", "harmless"), inp.train)
}
training.update(centroid_rule=d["harmful_centroid"], min_group=d["min_group"], generate=True,
                max_new_tokens=p.max_new_tokens, judge=p.judge, refused=cmeta["counts"].get("refused"),
                accepted=cmeta["counts"].get("accepted"), augment=p.augment,
                n_harmful_augmented=n_harmful + sum(len(e) for e in extra))
meta = latent_guard.write_artefact(
    snakemake.output.centroids.rsplit("/", 1)[0], {k: cents[k] for k in latent_guard.CENTROID_KEYS},
    positions=cmeta["positions"], inst_index=inst,
    model=latent_guard.model_record(card, inp.model, snakemake.output.guard.rsplit("/", 1)[0], name=snakemake.wildcards.model),
    template=latent_guard.template_record(fmt, p.system_prompt),
    normalise_endings=p.normalise_endings, layers=p.layers, threshold=p.threshold, hidden_dtype=p.storage_dtype,
    runtime={"dtype": str(models.resolve_dtype(rt["dtype"], dev)).removeprefix("torch."), "batch_size": rt["batch_size"],
             "device": str(dev)},
    training=training, created_by="rule latent_guard",
    extra_meta={"counts": cmeta["counts"], "augment": p.augment, "n_harmful_augmented": training["n_harmful_augmented"]},
)
log.info("guard artefact %s (version %s) for %s", snakemake.output.guard, meta["version"], meta["model"]["identity"])
finite = {s: {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()} for s, m in metrics.items()}
io.write_json(snakemake.output.metrics, {
    "threshold": p.threshold, "layers": p.layers, "n_harmful_train": n_harmful,
    "n_augment": sum(len(e) for e in extra), "by_set": finite, "note": "null = undefined (one class absent)",
})
log.info("Latent Guard: %s", metrics["all"])
