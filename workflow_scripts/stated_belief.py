"""Rule stated_belief: the model's own verdict on every held-out prompt (reply inversion) vs its behaviour and Δ's."""

from pathlib import Path

import pandas as pd

from harmref import belief, hidden_sets, inversion, io, latent_guard, models, plots, positions, runlog, token_scores

log = runlog.start(snakemake)
inp, p, rt = snakemake.input, snakemake.params, snakemake.params.runtime
model_name = snakemake.wildcards.model
cents = io.read_tensors(inp.directions)
cmeta = io.read_sidecar(inp.directions)
inst, post = cmeta["inst_index"], len(cmeta["positions"]) - 1
sets = [(name, hs.hidden, hs.ids, hs.by_id)
        for name, hp, gp in zip(p.eval_sets, inp.hidden, inp.gens) for hs in [hidden_sets.load(hp, gp, cmeta["positions"])]]

model, tok = models.load(inp.model, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=model_name)
score = token_scores.TokenScore.from_strings(tok, "inversion_margin", p.answer_tokens["harmful"], p.answer_tokens["harmless"])
rows = []
for q in p.questions:
    qid, question = inversion.question_text(q)
    for name, h, ids, by_id in sets:
        prompts = [by_id[i]["prompt"] for i in ids]
        positions.check_context(tok, fmt, prompts, models.context_length(model, tok), reserve=p.max_new_tokens,
                                ids=ids, source=inp.gens[p.eval_sets.index(name)], questions=[question] * len(ids))
        answers = belief.ask(model, tok, fmt, prompts, question, score, p.max_new_tokens, rt["batch_size"],
                             progress=runlog.progress(len(ids), f"stated belief {name} {qid}"))
        s = latent_guard.score_hidden(h, cents, inst, post, layers=p.layers, threshold=p.threshold)
        rows += belief.prompt_rows(name, ids, by_id, answers, qid, s["delta_harmful"], s["delta_refuse"], p.threshold)

out = {Path(f).stem: f for f in snakemake.output.tables}
io.write_table(pd.DataFrame(rows), out["stated_belief"], floatfmt=".4f")
table = belief.belief_vs_behaviour(rows, model_name)
io.write_table(table, out["belief_vs_behaviour"], markdown_df=belief.readable(table))
io.save_figure(plots.belief_figure(table, rows, model_name, p.threshold), snakemake.output.figure)
log.info("belief vs behaviour:\n%s", table[table["set"] == "all"].to_string())
