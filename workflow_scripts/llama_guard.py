"""Rule llama_guard: Llama Guard 3 verdicts on one prompt set through an Ollama server (safe, unsafe or invalid)."""

from harmref import guards, io, runlog

log = runlog.start(snakemake)
p = snakemake.params
guard = guards.LlamaGuard(host=p.host, model=p.model, timeout=p.timeout)
guard.check()  # fails here, naming the host, when no server answers
recs = io.read_jsonl(snakemake.input[0])
out = guard([r["prompt"] for r in recs], progress=runlog.progress(len(recs), "llama guard"))
io.write_jsonl(snakemake.output[0], [{"id": r["id"], "llama_guard3": o["unsafe"], "llama_guard3_verdict": o["verdict"],
                                      "llama_guard3_categories": o["categories"], "reply": o["reply"]}
                                     for r, o in zip(recs, out)])
counts = {v: sum(o["verdict"] == v for o in out) for v in ("unsafe", "safe", "invalid")}
log.info("%s at %s: %d unsafe, %d safe, %d invalid of %d", p.model, p.host, *counts.values(), len(out))
if counts["invalid"]:
    log.warning("%d replies are not a Llama Guard verdict (e.g. %r); Table 3 counts them in llama_guard3_invalid",
                counts["invalid"], next(o["reply"] for o in out if o["verdict"] == "invalid")[:80])
