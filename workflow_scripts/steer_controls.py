"""Rule steer_controls: coefficient sweep, norm-matched and scope-swapped directions at each arm's best layer."""

from pathlib import Path

from harmref import io, judging, models, positions, runlog, steering_plans, token_scores

log = runlog.start(snakemake)
p, rt = snakemake.params.steering, snakemake.params.runtime
# the optional Ollama refusal judge of the steered refusal replies, checked before the model loads
llm_judge = judging.OllamaJudge(**snakemake.params.llm_judge) if snakemake.params.llm_judge else None
if llm_judge is not None:
    llm_judge.check()
sweeps = {Path(f).stem: io.read_jsonl(f) for f in snakemake.input.sweeps}
plans = {exp: steering_plans.controls_plan(exp, p, rows) for exp, rows in sweeps.items()}
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, snakemake.params.system_prompt, date=snakemake.params.template_date,
                                         model=snakemake.wildcards.model)
directions = io.read_tensors(snakemake.input.directions)
scores = token_scores.default_scores(tok, snakemake.params.refusal_tokens, p["answer_tokens"])
out = []
for exp, plan in plans.items():
    n = sum(len(prompts) * len(settings) for prompts, settings in plan)
    log.info("%s controls: %d rows at layers %s", exp, n, sorted({s.layer for _, ss in plan for s in ss}))
    out += steering_plans.execute(
        model, tok, fmt, plan, directions, max_new_tokens=p[exp]["max_new_tokens"], batch_size=p["batch_size"],
        scores=scores, unit=p["unit"], every_step=p["every_step"],
        llm_judge=llm_judge if exp == "refusal" else None, progress=runlog.progress(n, f"controls {exp}"),
    )
io.write_jsonl(snakemake.output[0], out)
log.info("wrote %d control generations", len(out))
