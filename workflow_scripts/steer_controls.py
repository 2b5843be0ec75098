"""Rule steer_controls: coefficient sweep, norm-matched and scope-swapped directions at each arm's best layer."""

from pathlib import Path

from harmref import io, models, positions, runlog, steering

log = runlog.start(snakemake)
p, rt = snakemake.params.steering, snakemake.params.runtime
sweeps = {Path(f).stem: io.read_jsonl(f) for f in snakemake.input.sweeps}
plans = {exp: steering.controls_plan(exp, p, rows) for exp, rows in sweeps.items()}
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, snakemake.params.system_prompt, date=snakemake.params.template_date,
                                         model=snakemake.wildcards.model)
directions = io.read_tensors(snakemake.input.directions)
out = []
for exp, plan in plans.items():
    n = sum(len(prompts) * len(settings) for prompts, settings in plan)
    log.info("%s controls: %d rows at layers %s", exp, n, sorted({s.layer for _, ss in plan for s in ss}))
    out += steering.execute(model, tok, fmt, exp, plan, directions, p, snakemake.params.refusal_tokens,
                            progress=runlog.progress(n, f"controls {exp}"))
io.write_jsonl(snakemake.output[0], out)
log.info("wrote %d control generations", len(out))
