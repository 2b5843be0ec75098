"""Rule steer: one batched layer sweep — Fig 4 (refusal: accepted-harmless prompts) or Fig 5 (reply inversion)."""

from pathlib import Path

from harmref import datasets, io, models, positions, runlog, steering

log = runlog.start(snakemake)
p, rt, experiment = snakemake.params.steering, snakemake.params.runtime, snakemake.wildcards.experiment
# refusal: the model's own chat generations (prompts as the model read them); inversion: the prompt sets
read = io.read_jsonl if experiment == "refusal" else lambda f: datasets.load_prompts(f, snakemake.params.normalise_endings)
records = {Path(f).stem: read(f) for f in snakemake.input.prompts}
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, snakemake.params.system_prompt, date=snakemake.params.template_date,
                                         model=snakemake.wildcards.model)
directions = io.read_tensors(snakemake.input.directions)
plan = steering.sweep_plan(experiment, p, models.n_layers(model), records)
n = sum(len(prompts) * len(settings) for prompts, settings in plan)
rows = steering.execute(model, tok, fmt, experiment, plan, directions, p, snakemake.params.refusal_tokens,
                        progress=runlog.progress(n, f"steer {experiment}"))
io.write_jsonl(snakemake.output[0], rows)
log.info("wrote %d steered generations", len(rows))
