"""Rule organism_eval: refusal per held-out set (base vs organism), reply-inversion accuracy per question, answer
samples; from both models' judged generations and their organism_replies (no model is loaded here)."""

from pathlib import Path

from harmref import inversion, io, organism_eval, runlog

log = runlog.start(snakemake)
inp, p, ev = snakemake.input, snakemake.params, snakemake.params.eval
gens = {role: {Path(f).stem: io.read_jsonl(f) for f in inp[f"{role}_gens"]} for role in ("base", "organism")}
io.write_table(organism_eval.refusal_comparison(gens["base"], gens["organism"], ev["targets"]), snakemake.output.refusal[0])

rows, answers, samples = [], {}, None
for role in ("base", "organism"):
    name = p.names[role]
    rows += inversion.reply_predictions(io.read_jsonl(inp[f"{role}_inversion"]), name)
    said = io.read_jsonl(inp[f"{role}_samples"])
    if samples is None:
        samples = said
    elif [(r["set"], r["id"]) for r in said] != [(r["set"], r["id"]) for r in samples]:
        raise ValueError(f"{inp[f'{role}_samples']}: not the sample prompts of {inp['base_samples']} (rerun organism_replies)")
    answers[name] = [r["response"] for r in said]

table = inversion.accuracy_table(rows, trained={p.names["organism"]: p.trained})
io.write_table(table, snakemake.output.inversion[0])
io.write_jsonl(snakemake.output.predictions, rows)
io.write_text(snakemake.output.samples, organism_eval.samples_markdown(
    samples, answers, f"Greedy answers, {p.names['base']} vs {p.names['organism']} ({ev['sample_max_new_tokens']} new tokens)"))
log.info("inversion accuracy:\n%s", table.to_string())
