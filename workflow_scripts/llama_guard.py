"""Rule llama_guard: Llama Guard 3 verdicts on one prompt set through an Ollama server (unsafe if the reply says so)."""

from harmref import guards, io, runlog

log = runlog.start(snakemake)
p = snakemake.params
guard = guards.LlamaGuard(host=p.host, model=p.model, timeout=p.timeout)
guard.check()  # fails here, naming the host, when no server answers
recs = io.read_jsonl(snakemake.input[0])
out = guard([r["prompt"] for r in recs], progress=runlog.progress(len(recs), "llama guard"))
io.write_jsonl(snakemake.output[0], [{"id": r["id"], "llama_guard3": o["unsafe"], "reply": o["reply"]} for r, o in zip(recs, out)])
log.info("%s at %s: %d / %d unsafe", p.model, p.host, sum(o["unsafe"] for o in out), len(out))
