"""Rule steer: one batched layer sweep — Fig 4 (refusal: accepted-harmless prompts) or Fig 5 (reply inversion)."""

from pathlib import Path

from harmref import datasets, io, judging, models, positions, runlog, steering_plans, token_scores

log = runlog.start(snakemake)
p, rt, experiment = snakemake.params.steering, snakemake.params.runtime, snakemake.wildcards.experiment
# the optional Ollama refusal judge of the steered replies (Fig 4 only), checked before the model loads
llm_judge = judging.OllamaJudge(**snakemake.params.llm_judge) if snakemake.params.llm_judge else None
if llm_judge is not None:
    llm_judge.check()
# refusal: the model's own chat generations (prompts as the model read them); inversion: the prompt sets
read = io.read_jsonl if experiment == "refusal" else lambda f: datasets.load_prompts(f, snakemake.params.normalise_endings)
records = {Path(f).stem: read(f) for f in snakemake.input.prompts}
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, snakemake.params.system_prompt, date=snakemake.params.template_date,
                                         model=snakemake.wildcards.model)
directions = io.read_tensors(snakemake.input.directions)
plan = steering_plans.sweep_plan(experiment, p, models.n_layers(model), records)
n = sum(len(prompts) * len(settings) for prompts, settings in plan)
rows = steering_plans.execute(
    model, tok, fmt, plan, directions, max_new_tokens=p[experiment]["max_new_tokens"], batch_size=p["batch_size"],
    scores=token_scores.default_scores(tok, snakemake.params.refusal_tokens, p["answer_tokens"]),
    unit=p["unit"], every_step=p["every_step"], llm_judge=llm_judge, progress=runlog.progress(n, f"steer {experiment}"),
)
io.write_jsonl(snakemake.output[0], rows)
log.info("wrote %d steered generations", len(rows))
