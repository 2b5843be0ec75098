"""The four centroids, the two directions and what the paper measures with them (§3.2–3.4, App. B, F).

Hidden tensors are [n, layers, positions, d]; `inst` is the index of t_inst on the
position axis and the last index is t_post-inst.

Centroids (App. B): harmful = harmful training prompts the model refuses (or all
of them), harmless = harmless training prompts it accepts; refused / accepted =
the training prompts grouped by the model's own behaviour, whatever their label.
harmfulness direction = μ_harmful − μ_harmless at t_inst; refusal direction =
μ_refused − μ_accepted at t_post-inst (eq 5).
"""

from __future__ import annotations

import logging
from itertools import combinations

import pandas as pd
import torch

from .directions import auroc, belief_scores, centroid, clustering_scores, cosine_by_layer, layer_accuracy

log = logging.getLogger(__name__)

GROUPS = ("refused-harmful", "accepted-harmless", "refused-harmless", "accepted-harmful")


def group_of(label: str, refused: bool) -> str:
    return f"{'refused' if refused else 'accepted'}-{label}"


def _mean_or_fallback(h: torch.Tensor, keep: torch.Tensor, min_group: int, name: str, notes: dict) -> torch.Tensor:
    if int(keep.sum()) >= min_group:
        notes[name] = {"n": int(keep.sum()), "fallback": False}
        return centroid(h[keep])
    log.warning("%s centroid: only %d prompts in the behaviour group, using all %d", name, int(keep.sum()), len(h))
    notes[name] = {"n": len(h), "fallback": True}
    return centroid(h)


def fit(h_harmful, refused_harmful, h_harmless, refused_harmless, mode: str = "refused", min_group: int = 5):
    """Centroids [layers, positions, d] and directions [layers, d]; returns (tensors, notes)."""
    rh = torch.as_tensor(refused_harmful, dtype=torch.bool)
    rl = torch.as_tensor(refused_harmless, dtype=torch.bool)
    notes: dict = {}
    if mode == "refused":
        mu_harmful = _mean_or_fallback(h_harmful, rh, min_group, "harmful", notes)
        mu_harmless = _mean_or_fallback(h_harmless, ~rl, min_group, "harmless", notes)
    else:
        mu_harmful, mu_harmless = centroid(h_harmful), centroid(h_harmless)
        notes.update(harmful={"n": len(h_harmful), "fallback": False}, harmless={"n": len(h_harmless), "fallback": False})
    pool = torch.cat([h_harmful, h_harmless])
    refused = torch.cat([rh, rl])
    notes["refused"] = {"n": int(refused.sum())}
    notes["accepted"] = {"n": int((~refused).sum())}
    mu_refused, mu_accepted = centroid(pool[refused]), centroid(pool[~refused])
    return {"mu_harmful": mu_harmful, "mu_harmless": mu_harmless, "mu_refused": mu_refused, "mu_accepted": mu_accepted}, notes


def directions(cents: dict, inst: int) -> dict:
    """harmfulness (t_inst) and refusal (t_post-inst) directions, [layers, d]."""
    return {
        "harmfulness": cents["mu_harmful"][:, inst] - cents["mu_harmless"][:, inst],
        "refusal": cents["mu_refused"][:, -1] - cents["mu_accepted"][:, -1],
    }


def cosine_table(cents: dict, inst: int) -> pd.DataFrame:
    """Per-layer cosines between harmfulness and refusal directions, at the same and across positions.

    Cross-position cosine alone mostly measures position (the same concept at
    t_inst vs t_post-inst is also far from 1), so both are reported.
    """
    harm = {p: cents["mu_harmful"][:, i] - cents["mu_harmless"][:, i] for p, i in (("inst", inst), ("post", -1))}
    ref = {p: cents["mu_refused"][:, i] - cents["mu_accepted"][:, i] for p, i in (("inst", inst), ("post", -1))}
    df = pd.DataFrame({
        "layer": range(harm["inst"].shape[0]),
        "cos_harm_inst__refusal_post": cosine_by_layer(harm["inst"], ref["post"]).numpy(),
        "cos_harm_inst__refusal_inst": cosine_by_layer(harm["inst"], ref["inst"]).numpy(),
        "cos_harm_post__refusal_post": cosine_by_layer(harm["post"], ref["post"]).numpy(),
        "cos_harm_inst__harm_post": cosine_by_layer(harm["inst"], harm["post"]).numpy(),
        "cos_refusal_inst__refusal_post": cosine_by_layer(ref["inst"], ref["post"]).numpy(),
        "norm_harmfulness": harm["inst"].norm(dim=-1).numpy(),
        "norm_refusal": ref["post"].norm(dim=-1).numpy(),
    })
    return df


def clustering_table(evals: list[tuple[str, torch.Tensor, list[str], list[bool]]], cents: dict, positions: list[str]) -> pd.DataFrame:
    """Mean clustering score s^l (eq 2) per set, behaviour group, position and layer.

    Centres are the refused-harmful (μ_harmful) and accepted-harmless (μ_harmless)
    centroids at the same position (paper Fig 2, App. F).
    """
    rows = []
    for name, h, labels, refused in evals:
        groups = [group_of(l, r) for l, r in zip(labels, refused)]
        s_all = clustering_scores(h, cents["mu_harmful"], cents["mu_harmless"])
        for p, pos in enumerate(positions):
            s = s_all[:, :, p].contiguous()  # reductions then sum in the same order as before
            for g in sorted(set(groups)):
                idx = torch.tensor([x == g for x in groups])
                mean = s[idx].mean(0)
                sd = s[idx].std(0) if int(idx.sum()) > 1 else torch.full_like(mean, float("nan"))
                for layer, (v, sv) in enumerate(zip(mean.tolist(), sd.tolist())):
                    rows.append({"set": name, "group": g, "position": pos, "layer": layer, "mean_s": v, "sd_s": sv, "n": int(idx.sum())})
    return pd.DataFrame(rows)


def pooled_clustering(clust: pd.DataFrame) -> pd.DataFrame:
    """Fig 2 data: mean s per group, pooled over sets (weighted by n), and the pooled per-prompt SD `sd_s` if given."""
    c = clust.assign(w=clust["mean_s"] * clust["n"])
    cols = ["w", "n"]
    if "sd_s" in clust:  # Σ s² per set = sd²(n−1) + n·mean²
        c["w2"] = clust["sd_s"].fillna(0.0) ** 2 * (clust["n"] - 1) + clust["n"] * clust["mean_s"] ** 2
        cols.append("w2")
    g = c.groupby(["group", "position", "layer"], as_index=False)[cols].sum()
    g["mean_s"] = g["w"] / g["n"]
    if "w2" in g:
        var = (g["w2"] - g["n"] * g["mean_s"] ** 2) / (g["n"] - 1)
        g["sd_s"] = var.clip(lower=0).pow(0.5).where(g["n"] > 1)
    return g.drop(columns=[c for c in ("w", "w2") if c in g])


def position_table(pooled: pd.DataFrame, layers: tuple[int, int], positions: list[str]) -> pd.DataFrame:
    """App. F (Fig 14): mean s over the middle layers, per position and group."""
    lo, hi = layers
    mid = pooled[(pooled["layer"] >= lo) & (pooled["layer"] <= hi)]
    t = mid.groupby(["group", "position"], as_index=False)["mean_s"].mean()
    t = t.pivot(index="position", columns="group", values="mean_s").reindex(positions).reset_index()
    t.columns.name = None
    return t


def beliefs(evals, cents: dict, inst: int) -> pd.DataFrame:
    """Per-prompt Δharmful (t_inst) and Δrefuse (t_post-inst), eqs 3–4, averaged over all layers."""
    rows = []
    for name, h, labels, refused, ids in evals:
        dh, dr = belief_scores(h, cents, inst, where=f"hidden states of {name}")
        for i in range(len(ids)):
            rows.append({"set": name, "id": ids[i], "label": labels[i], "refused": bool(refused[i]),
                         "group": group_of(labels[i], refused[i]), "delta_harmful": float(dh[i]), "delta_refuse": float(dr[i])})
    return pd.DataFrame(rows)


def harmfulness_accuracy(h: torch.Tensor, is_harmful: torch.Tensor, cents: dict, inst: int) -> pd.DataFrame:
    """Held-out per-layer accuracy (threshold 0) and AUROC of the centroid rule, at t_inst and t_post-inst."""
    out = {"layer": list(range(h.shape[1]))}
    all_layers = {"layer": "mean-over-layers (Δharmful)"}
    s_all = clustering_scores(h, cents["mu_harmful"], cents["mu_harmless"])
    for pos, i in (("inst", inst), ("post", -1)):
        s = s_all[:, :, i].contiguous()
        out[f"acc_{pos}"] = layer_accuracy(s, is_harmful).numpy()
        out[f"auroc_{pos}"] = [auroc(s[:, l], is_harmful) for l in range(s.shape[1])]
        d = s.mean(1)  # Δ over all layers (eq 3), here at both positions
        all_layers[f"acc_{pos}"] = float(((d >= 0) == is_harmful.bool()).double().mean())
        all_layers[f"auroc_{pos}"] = auroc(d, is_harmful)
    df = pd.DataFrame(out)
    return pd.concat([df.astype({"layer": object}), pd.DataFrame([all_layers])], ignore_index=True).assign(n=int(h.shape[0]))


def category_directions(h_cat: torch.Tensor, categories: list[str], mu_harmless: torch.Tensor, inst: int) -> dict:
    """Per-category harmfulness directions at t_inst and t_post-inst: {category: [layers, 2, d]}."""
    out = {}
    for c in sorted(set(categories)):
        idx = torch.tensor([x == c for x in categories])
        mu = centroid(h_cat[idx])
        out[c] = torch.stack([mu[:, inst] - mu_harmless[:, inst], mu[:, -1] - mu_harmless[:, -1]], dim=1)
    return out


def category_table(cat_dirs: dict, harmfulness: torch.Tensor, refusal: torch.Tensor) -> pd.DataFrame:
    """Per layer: mean pairwise cosine between category directions (t_inst and t_post-inst),
    and mean cosine of the category directions with the global harmfulness and refusal directions."""
    names = sorted(cat_dirs)
    n_layers = harmfulness.shape[0]
    rows = []
    for layer in range(n_layers):
        row = {"layer": layer, "n_categories": len(names)}
        for j, pos in enumerate(("inst", "post")):
            pairs = [float(torch.nn.functional.cosine_similarity(cat_dirs[a][layer, j], cat_dirs[b][layer, j], dim=0))
                     for a, b in combinations(names, 2)]
            row[f"pairwise_cos_{pos}"] = sum(pairs) / len(pairs) if pairs else float("nan")
        row["cos_with_harmfulness"] = sum(float(torch.nn.functional.cosine_similarity(cat_dirs[c][layer, 0], harmfulness[layer], dim=0)) for c in names) / max(len(names), 1)
        row["cos_post_with_refusal"] = sum(float(torch.nn.functional.cosine_similarity(cat_dirs[c][layer, 1], refusal[layer], dim=0)) for c in names) / max(len(names), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def middle_layers(n_entries: int, fractions) -> tuple[int, int]:
    """Layer range for App. F averages: the paper's 9–20 of 32 layers ≈ fractions (0.28, 0.64) of depth."""
    lo, hi = fractions
    return int(round(lo * (n_entries - 1))), int(round(hi * (n_entries - 1)))
