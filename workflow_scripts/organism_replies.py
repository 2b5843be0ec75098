"""Rule organism_replies: one model's greedy answers to the reply-inversion questions (every question of
harmref.inversion.QUESTIONS on the first inversion_n prompts of each inversion set) and to the sample prompts."""

from pathlib import Path

from harmref import datasets, generation, inversion, io, models, positions, runlog

log = runlog.start(snakemake)
inp, p, rt, ev = snakemake.input, snakemake.params, snakemake.params.runtime, snakemake.params.eval
name = snakemake.wildcards.model
inv = {Path(f).stem: datasets.load_prompts(f, p.normalise_endings)[: ev["inversion_n"]] for f in inp.inversion_prompts}
samples = [{**r, "set": Path(f).stem} for f in inp.sample_prompts
           for r in datasets.load_prompts(f, p.normalise_endings)[: ev["sample_n"]]]
model, tok = models.load(inp.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=name)
rows = []
for q, question in enumerate(inversion.QUESTIONS):
    for set_name, recs in inv.items():
        replies = generation.generate(model, tok, fmt, [r["prompt"] for r in recs], ev["inversion_max_new_tokens"],
                                      rt["batch_size"], questions=[question] * len(recs))
        rows += [{"set": set_name, "question": q, "id": r["id"], "prompt": r["prompt"], "label": r["label"], "response": x}
                 for r, x in zip(recs, replies)]
answers = generation.generate(model, tok, fmt, [r["prompt"] for r in samples], ev["sample_max_new_tokens"], rt["batch_size"])
io.write_jsonl(snakemake.output.inversion, rows)
io.write_jsonl(snakemake.output.samples, [{"set": r["set"], "id": r["id"], "prompt": r["prompt"], "label": r["label"],
                                           "response": x} for r, x in zip(samples, answers)])
log.info("%s: %d inversion replies, %d sample answers", name, len(rows), len(samples))
