"""Rule finetune_attack: fine-tune the organism on N compliant pairs; acceptance and Δ scores with pre-attack centroids (Fig 7)."""

import pandas as pd

from harmref import datasets, generation, geometry, io, judging, models, organism, positions, runlog

log = runlog.start(snakemake)
inp, p, rt, a = snakemake.input, snakemake.params, snakemake.params.runtime, snakemake.params.attack
pairs = io.read_jsonl(inp.pairs)
records = [r for f in inp.prompts for r in datasets.load_prompts(f, p.normalise_endings)[: a["eval_n"]]]
prompts = [r["prompt"] for r in records]
cents, meta = io.read_tensors(inp.directions), io.read_sidecar(inp.directions)
middle = geometry.middle_layers(cents["mu_harmful"].shape[0], p.middle_layers)
judge = judging.make_judge(p.generation["judge"], **p.generation.get("ollama_judge", {}))
judge.check()  # an unreachable judge fails now, not after the first fine-tuning
summaries, layers, responses = [], [], []
if not pairs:
    raise ValueError(f"{inp.pairs} holds no compliant answers: the base model refused every attack prompt")
for n in [0, *a["n_pairs"]]:
    model, tok = models.load(inp.organism, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
    fmt = positions.ChatFormat.from_tokenizer(tok, p.generation["system_prompt"], date=p.generation["template_date"])
    history = {}
    if n:
        cfg = organism.attack_config(a, p.train, n, seed=p.seed)
        model, history = organism.train(model, tok, organism.tokenize(tok, fmt, pairs[:n]), cfg)
    texts = generation.generate(model, tok, fmt, prompts, p.generation["max_new_tokens"], rt["batch_size"])
    judged = judging.judge_records([{"id": r["id"], "prompt": r["prompt"], "response": t} for r, t in zip(records, texts)], judge)
    refused = judging.refused_flags(judged, f"the replies of the organism attacked with N={n} pairs")
    s_harm, s_ref = organism.attack_scores(model, tok, fmt, prompts, cents, meta["inst_index"], p.before, rt["batch_size"])
    summary, lay = organism.attack_rows(min(n, len(pairs)), records, refused, s_harm, s_ref, middle,
                                        model=snakemake.wildcards.model)
    summary.update(train_steps=len(history.get("losses", [])),
                   final_loss=history.get("final_loss"), train_seconds=history.get("wall_seconds"))
    summaries.append(summary)
    layers += lay
    responses += [{"n_pairs": n, "id": r["id"], "prompt": r["prompt"], "response": t, "refused": bool(x)}
                  for r, t, x in zip(records, texts, refused)]
    log.info("N=%d: acceptance %.2f, Δharmful(mid) %.3f, Δrefuse(mid) %.3f", n, summary["acceptance_rate"],
             summary["delta_harmful_mid"], summary["delta_refuse_mid"])

io.write_table(organism.attack_table(summaries), snakemake.output.table[0])
io.write_table(pd.DataFrame(layers), snakemake.output.layers[0])
io.write_jsonl(snakemake.output.responses, responses)
io.save_figure(organism.attack_figure(pd.DataFrame(layers), snakemake.wildcards.model), snakemake.output.figure)
