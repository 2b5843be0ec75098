"""Rule safety_tune: fine-tune the base model on the organism's examples; save weights, model card and recipe."""

import time
from pathlib import Path

from harmref import io, models, positions, runlog, training

t0 = time.time()
log = runlog.start(snakemake)
p, rt = snakemake.params, snakemake.params.runtime
examples = io.read_jsonl(snakemake.input.data)
model, tok = models.load(snakemake.input.base, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=snakemake.wildcards.model)
cfg = training.TrainConfig.from_dict(p.train, seed=p.seed)
model, history = training.train(model, tok, training.tokenize(tok, fmt, examples), cfg,
                                progress=runlog.progress(cfg.steps, "train"))
out = Path(snakemake.output.card).parent
training.save(model, tok, out)
hashes = {name: io.sha256_file(snakemake.input[name]) for name in ("harmful", "harmless", "data")}
base_card = models.read_card(snakemake.input.base)
extra = {"base_card": base_card, "system_prompt": p.system_prompt, "script_seconds": round(time.time() - t0, 1),
         "script_peak_rss_gb": training.peak_rss_gb()}
rec = training.recipe(cfg, history, examples, hashes, p.base, extra)
io.write_json(snakemake.output.recipe, rec)
# the card records the tuned weights' sha256 and an identity over weights, recipe, data and base model
io.write_json(snakemake.output.card, models.tuned_card(out, p.base, base_card, rec, snakemake.output.recipe))
log.info("trained in %.0f s (peak RSS %.2f GB), loss %.3f → %.3f; saved to %s", history["wall_seconds"],
         history["peak_rss_gb"], history["first_loss"], history["final_loss"], out)
