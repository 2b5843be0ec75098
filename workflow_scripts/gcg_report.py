"""Rule gcg_report: per goal, refusal of the goal alone, with the initial suffix and with the optimised one."""

from harmref import gcg, generation, io, judging, models, positions, runlog

log = runlog.start(snakemake)
inp, p, rt = snakemake.input, snakemake.params, snakemake.params.runtime
records = io.read_jsonl(inp.prompts)
attacked = {r["id"]: r for r in io.read_jsonl(inp.gcg_gens)}  # the generate rule's replies and verdicts
plain = {r["id"]: r for r in io.read_jsonl(inp.goal_gens)}
missing = [r["goal_id"] for r in records if r["goal_id"] not in plain]
if missing:
    raise ValueError(f"{inp.goal_gens} has no reply to goal {missing[0]!r} of {inp.prompts}")
# the one new generation: each goal with the suffix the search started from
judge = judging.make_judge(p.judge, **p.ollama_judge)
judge.check()
model, tok = models.load(inp.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=snakemake.wildcards.model)
init = [r["goal"] + gcg.init_string(p.optim_str_init) for r in records]
init_rows = [{"id": r["id"], "prompt": x, "response": y}
             for r, x, y in zip(records, init, generation.generate(model, tok, fmt, init, p.max_new_tokens, rt["batch_size"]))]
refused = {  # an invalid verdict of the LLM judge stops here, naming the file, rather than reading as "accepted"
    "plain": judging.refused_flags([plain[r["goal_id"]] for r in records], inp.goal_gens),
    "init": judging.refused_flags(judging.judge_records(init_rows, judge), "the goals with the initial suffix"),
    "gcg": judging.refused_flags([attacked[r["id"]] for r in records], inp.gcg_gens),
}
table = gcg.report(records, {"gcg": [attacked[r["id"]]["response"] for r in records]}, refused)
io.write_table(table, snakemake.output[0])
n = len(table)
log.info("refused %d/%d goals alone, %d/%d with the initial suffix, %d/%d with the optimised one; "
         "the reply starts with the target for %d; mean loss %.3f → %.3f", table["refused_plain"].sum(), n,
         table["refused_init"].sum(), n, table["refused_gcg"].sum(), n, table["starts_with_target"].sum(),
         table["initial_loss"].mean(), table["best_loss"].mean())
