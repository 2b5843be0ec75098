"""Rule finetune_attack: Fig 7 and its tables from the attacked models' generations and hidden states.

For N = 0 (the analysed model itself) and each attack size N, the first eval_n prompts of each eval set:
acceptance (rule judge's verdicts of {model}-attack{N}), and Δharmful (t_inst) / Δrefuse (t_post-inst) per
layer from {model}-attack{N}'s hidden states (rule extract_hidden) with the *unattacked* model's centroids."""

import pandas as pd

from harmref import attack, directions, geometry, io, plots, runlog

log = runlog.start(snakemake)
inp, p = snakemake.input, snakemake.params
cents, meta = io.read_tensors(inp.directions), io.read_sidecar(inp.directions)
middle = geometry.middle_layers(cents["mu_harmful"].shape[0], p.middle_layers)
k = len(p.eval_sets)
summaries, layers = [], []
for j, (n, name) in enumerate(zip([0, *p.sizes], p.names)):
    gens = [io.read_jsonl(f) for f in inp.gens[j * k : (j + 1) * k]]
    hfiles = inp.hidden[j * k : (j + 1) * k]
    hidden = [(io.read_tensors(f)["hidden"], io.read_sidecar(f)) for f in hfiles]
    records, refused, h = attack.attack_eval(gens, hidden, p.eval_n, inp.gens[j * k : (j + 1) * k])
    s_harm, s_ref = directions.layer_scores(h, cents, meta["inst_index"], where=", ".join(hfiles))
    rec = io.read_json(inp.recipes[j - 1]) if n else {}
    summary, lay = attack.attack_rows(rec.get("n_examples", 0), records, refused, s_harm, s_ref, middle, model=p.model)
    summary.update(train_steps=len(rec.get("losses", [])), final_loss=rec.get("final_loss"),
                   train_seconds=rec.get("wall_seconds"))
    summaries.append(summary)
    layers += lay
    log.info("%s (N=%d): acceptance %.2f, Δharmful(mid) %.3f, Δrefuse(mid) %.3f", name, n, summary["acceptance_rate"],
             summary["delta_harmful_mid"], summary["delta_refuse_mid"])

io.write_table(attack.attack_table(summaries), snakemake.output.table[0])
io.write_table(pd.DataFrame(layers), snakemake.output.layers[0])
io.save_figure(plots.attack_figure(pd.DataFrame(layers), p.model), snakemake.output.figure)
