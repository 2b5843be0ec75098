"""Rule claims: the paper's 13 claims (paper.md §7) checked on one model → claims.csv + claims.md."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harmref import claims, geometry, hidden_sets, io, runlog

log = runlog.start(snakemake)
inp, p = snakemake.input, snakemake.params
model = snakemake.wildcards.model
cents = io.read_tensors(inp.directions)
meta = io.read_sidecar(inp.directions)
inst, positions = meta["inst_index"], meta["positions"]


def load(hidden_path, gens_path):
    hs = hidden_sets.load(hidden_path, gens_path, positions)
    return hs.hidden, hs.labels, hs.refused()


def table(name):
    return pd.read_csv(getattr(inp, name)) if name in inp.keys() else None


ev = claims.Evidence(model=model, positions=positions, inst=inst, inversion_sets=tuple(p.inversion_sets), why=dict(p.why))
ev.middle = geometry.middle_layers(cents["harmfulness"].shape[0], p.middle_layers)
ev.table1, ev.beliefs = table("table1"), table("beliefs")
ev.fig4, ev.fig5, ev.fig6, ev.table3 = table("fig4"), table("fig5"), table("fig6"), table("table3")
ev.attack, ev.attack_layers = table("attack"), table("attack_layers")

# per-prompt clustering scores of the held-out sets (Figs 2, 14), pooled over sets as the figures are
scores, h_post, refused_all = {}, [], []
for hp, gp in zip(inp.hidden, inp.gens):
    h, labels, refused = load(hp, gp)
    for g, s in claims.group_scores(h, labels, refused, cents["mu_harmful"], cents["mu_harmless"]).items():
        scores.setdefault(g, []).append(s)
    h_post.append(h[:, :, -1])
    refused_all += refused
ev.scores = {g: np.concatenate(v) for g, v in scores.items()}
log.info("clustering groups: %s", {g: len(v) for g, v in ev.scores.items()})
ev.reference_cos = claims.reference_cosines(torch.cat(h_post), refused_all, cents["refusal"])

h_a, _, r_a = load(inp.harmful_hidden, inp.harmful_gen)
h_b, _, r_b = load(inp.harmless_hidden, inp.harmless_gen)
empty = [g for g in ("refused", "accepted") if meta["counts"][g]["n"] == 0]
if empty:
    ev.why["cosine"] = f"the refusal direction is undefined: no {empty[0]} prompt among the training prompts"
else:
    ev.cosine, ev.cosine_boot = claims.bootstrap_direction_cosine(h_a, r_a, h_b, r_b, inst, p.mode, p.min_group, seed=p.seed)

if "category" in inp.keys():
    side = io.read_sidecar(inp.category)
    if len(set(side["categories"])) >= 2:
        ev.categories = claims.bootstrap_category_cosines(io.read_tensors(inp.category)["hidden"], side["categories"],
                                                          cents["mu_harmless"], inst, seed=p.seed)
    else:
        ev.why["categories"] = f"{inp.category}: fewer than 2 categories"

rows = claims.check_all(ev)
for r in rows.itertuples():
    log.info("claim %d (%s): %s %s", r.claim, r.title, r.verdict, r.reason)
csv, md = snakemake.output.csv, snakemake.output.md
with io.atomic_group(csv, md) as (tmp_csv, tmp_md):
    rows.to_csv(tmp_csv, index=False)
    Path(tmp_md).write_text(claims.markdown(rows, model) + "\n", encoding="utf-8")
