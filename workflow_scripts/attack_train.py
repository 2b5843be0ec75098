"""Rule attack_train: the fine-tuning attack's derived model {model}-attack{N}: the analysed model fine-tuned on
the first N attack pairs; weights, model card (weights_sha256, identity) and recipe."""

import time
from pathlib import Path

from harmref import attack, io, models, positions, runlog, training

t0 = time.time()
log = runlog.start(snakemake)
p, rt = snakemake.params, snakemake.params.runtime
pairs = io.read_jsonl(snakemake.input.pairs)
if not pairs:
    raise ValueError(f"{snakemake.input.pairs} holds no compliant answers: every attack prompt was refused, so "
                     f"there is nothing to fine-tune {p.attack_from} on (see organism.attack.pairs_from)")
if len(pairs) < p.n_pairs:
    log.warning("%s holds %d pairs: the attack of N=%d trains on all of them", snakemake.input.pairs, len(pairs), p.n_pairs)
model, tok = models.load(snakemake.input.base, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=p.attack_from)
cfg = attack.attack_config(p.attack, p.train, p.n_pairs, seed=p.seed)
examples = pairs[: p.n_pairs]
model, history = training.train(model, tok, training.tokenize(tok, fmt, examples), cfg,
                                progress=runlog.progress(cfg.steps, "attack"))
out = Path(snakemake.output.card).parent
training.save(model, tok, out)
base_card = models.read_card(snakemake.input.base)
extra = {"base_card": base_card, "system_prompt": p.system_prompt, "attack_from": p.attack_from,
         "n_pairs": p.n_pairs, "script_seconds": round(time.time() - t0, 1), "script_peak_rss_gb": training.peak_rss_gb()}
rec = training.recipe(cfg, history, examples, {"pairs": io.sha256_file(snakemake.input.pairs)}, p.attack_from, extra)
io.write_json(snakemake.output.recipe, rec)
# identity over the attacked weights, the recipe (pairs' sha256, N, hyperparameters) and the unattacked model
io.write_json(snakemake.output.card, models.tuned_card(out, p.attack_from, base_card, rec, snakemake.output.recipe,
                                                       kind="attacked", extra={"n_pairs": p.n_pairs}))
log.info("attack N=%d: %d steps in %.0f s, loss %.3f → %.3f; saved to %s", p.n_pairs, cfg.steps,
         history["wall_seconds"], history["first_loss"], history["final_loss"], out)
