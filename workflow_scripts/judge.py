"""Rule judge: the generate rule's replies labelled refused / accepted (no model: the substring or the Ollama judge)."""

from harmref import io, judging, runlog

log = runlog.start(snakemake)
p = snakemake.params
judge = judging.make_judge(p.judge, **p.ollama_judge)
judge.check()  # an unreachable Ollama judge fails now, naming the host, before any reply is read
rows = judging.judge_file(snakemake.input.replies, judge)
io.write_jsonl(snakemake.output.generations, rows)
n_refused, n_invalid = sum(bool(r["refused"]) for r in rows), sum(r["refused"] is None for r in rows)
io.write_json(snakemake.output.sidecar, {  # the replies' sidecar (what rendered the prompts) and the judge
    **io.read_json(snakemake.input.sidecar), "judge": judge.name, "ollama_judge": p.ollama_judge or None,
    "refused": n_refused, "invalid": n_invalid,
})
log.info("refused %d / %d (%d invalid verdicts), judge %s", n_refused, len(rows), n_invalid, judge.name)
if n_invalid:
    log.warning("%d replies of the %s judge are not a verdict (field refused: null); refusal_rates counts them",
                n_invalid, judge.name)
