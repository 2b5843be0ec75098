"""Rule organism_eval: refusal per held-out set (base vs organism), reply-inversion accuracy per question, answer samples."""

from pathlib import Path

from harmref import datasets, generation, inversion, io, models, organism, positions, runlog

log = runlog.start(snakemake)
inp, p, rt, ev = snakemake.input, snakemake.params, snakemake.params.runtime, snakemake.params.eval
gens = {role: {Path(f).stem: io.read_jsonl(f) for f in inp[f"{role}_gens"]} for role in ("base", "organism")}
io.write_table(organism.refusal_comparison(gens["base"], gens["organism"], ev["targets"]), snakemake.output.refusal[0])

inv = {Path(f).stem: datasets.load_prompts(f, p.normalise_endings)[: ev["inversion_n"]] for f in inp.inversion_prompts}
samples = [{**r, "set": Path(f).stem} for f in inp.sample_prompts
           for r in datasets.load_prompts(f, p.normalise_endings)[: ev["sample_n"]]]
rows, answers = [], {}
for role in ("base", "organism"):
    name = p.names[role]
    model, tok = models.load(inp[role], rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
    fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=name)
    for q, question in enumerate(inversion.QUESTIONS):
        for set_name, recs in inv.items():
            replies = generation.generate(model, tok, fmt, [r["prompt"] for r in recs], ev["inversion_max_new_tokens"],
                                          rt["batch_size"], questions=[question] * len(recs))
            rows += [{"model": name, "set": set_name, **x} for x in inversion.predictions(recs, replies, q)]
    answers[name] = generation.generate(model, tok, fmt, [r["prompt"] for r in samples], ev["sample_max_new_tokens"], rt["batch_size"])
    log.info("%s: inversion and samples done", name)

table = inversion.accuracy_table(rows, trained={p.names["organism"]: p.trained})
io.write_table(table, snakemake.output.inversion[0])
io.write_jsonl(snakemake.output.predictions, rows)
io.write_text(snakemake.output.samples, organism.samples_markdown(
    samples, answers, f"Greedy answers, {p.names['base']} vs {p.names['organism']} ({ev['sample_max_new_tokens']} new tokens)"))
log.info("inversion accuracy:\n%s", table.to_string())
