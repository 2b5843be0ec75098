"""Rule generate: greedy responses to one prompt set, judged for refusal."""

from harmref import datasets, generation, io, judging, models, positions, runlog

log = runlog.start(snakemake)
rt, gen = snakemake.params.runtime, snakemake.params.generation
records = datasets.load_prompts(snakemake.input.prompts, snakemake.params.normalise_endings)
model, tok = models.load(snakemake.input.model, rt["device"], rt["dtype"])
fmt = positions.ChatFormat.from_tokenizer(
    tok, gen["system_prompt"], post_instruction=snakemake.wildcards.template == "chat"
)
responses = generation.generate(
    model, tok, fmt, [r["prompt"] for r in records], gen["max_new_tokens"], rt["batch_size"],
    progress=runlog.progress(len(records), "generate"),
)
rows = [{"id": r["id"], "prompt": r["prompt"], "label": r["label"], "category": r["category"], "response": x}
        for r, x in zip(records, responses)]
rows = judging.judge_records(rows, judging.make_judge(gen["judge"]))
io.write_jsonl(snakemake.output[0], rows)
log.info("refused %d / %d", sum(r["refused"] for r in rows), len(rows))
