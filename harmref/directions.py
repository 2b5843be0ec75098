"""Difference-in-means directions, centroids and the paper's scores (§3.2–3.4, eqs 2–5).

Hidden-state tensors are [n, layers, d] at one position (layers = L+1 entries), or
[n, layers, P, d] at P positions for `clustering_scores`, `layer_scores` and `belief_scores`.
Means accumulate in float64. Every table, guard, claim and the fine-tuning attack take their
s^l and Δ from here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def centroid(h: torch.Tensor) -> torch.Tensor:
    """Mean hidden state [layers, d] of h [n, layers, d]; NaN when n == 0."""
    if h.shape[0] == 0:
        return torch.full(h.shape[1:], float("nan"), dtype=torch.float64)
    return h.double().mean(0)


def diff_in_means(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """μ(pos) − μ(neg): [layers, d], unnormalised (as the paper saves it, eq 5)."""
    return centroid(pos) - centroid(neg)


def cosine_by_layer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-layer cosine of two [layers, d] directions → [layers]."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def centroid_score(h: torch.Tensor, mu_pos: torch.Tensor, mu_neg: torch.Tensor) -> torch.Tensor:
    """s^l = cos(h^l, μ_pos^l) − cos(h^l, μ_neg^l) per example and layer: [n, layers] (eq 2)."""
    h = h.double()
    return F.cosine_similarity(h, mu_pos[None].double(), dim=-1) - F.cosine_similarity(h, mu_neg[None].double(), dim=-1)


def belief_score(h: torch.Tensor, mu_pos: torch.Tensor, mu_neg: torch.Tensor, layers: slice | list | None = None) -> torch.Tensor:
    """Δ = mean over layers of s^l (eqs 3–4): Δharmful at t_inst, Δrefuse at t_post-inst → [n]."""
    s = centroid_score(h, mu_pos, mu_neg)
    if layers is not None:
        s = s[:, layers]
    return s.mean(1)


def clustering_scores(hidden: torch.Tensor, mu_harmful: torch.Tensor, mu_harmless: torch.Tensor) -> torch.Tensor:
    """s^l (eq 2) at every position, each against the centroids at that position.

    hidden [n, layers, P, d], centroids [layers, P, d] → [n, layers, P] (float64).
    """
    return torch.stack([centroid_score(hidden[:, :, p], mu_harmful[:, p], mu_harmless[:, p]) for p in range(hidden.shape[2])], dim=-1)


def layer_scores(hidden, cents: dict, inst: int, post: int = -1, where: str = "hidden states") -> tuple[torch.Tensor, torch.Tensor]:
    """The two beliefs' s^l per prompt and layer: harmfulness (μ_harmful vs μ_harmless) at position `inst`,
    refusal (μ_refused vs μ_accepted) at position `post` (t_post-inst, the last by default).

    hidden [n, layers, P, d]; cents: mu_harmful, mu_harmless, mu_refused, mu_accepted, each [layers, P, d] at the
    same P positions (rule directions' centroids). Returns ([n, layers], [n, layers]) in float64; `where` names
    the hidden states in the error when the shapes do not match.
    """
    h = torch.as_tensor(hidden)
    mu = torch.as_tensor(cents["mu_harmful"])
    if h.dim() != 4:
        raise ValueError(f"{where}: expected hidden states [n, layers, positions, d], got shape {tuple(h.shape)}")
    if h.shape[2] != mu.shape[1]:
        raise ValueError(f"{where}: {h.shape[2]} positions, the centroids {mu.shape[1]}: "
                         "hidden.positions_before must match the directions run")
    if h.shape[1] != mu.shape[0] or h.shape[3] != mu.shape[2]:
        raise ValueError(f"{where}: {h.shape[1]} layer entries of width {h.shape[3]}, the centroids {mu.shape[0]} of "
                         f"width {mu.shape[2]}: not the same model architecture")
    s_harm = centroid_score(h[:, :, inst], mu[:, inst], torch.as_tensor(cents["mu_harmless"])[:, inst])
    s_ref = centroid_score(h[:, :, post], torch.as_tensor(cents["mu_refused"])[:, post], torch.as_tensor(cents["mu_accepted"])[:, post])
    return s_harm, s_ref


def belief_scores(hidden, cents: dict, inst: int, post: int = -1, layers: slice | list | None = None,
                  where: str = "hidden states") -> tuple[torch.Tensor, torch.Tensor]:
    """Δharmful at `inst` and Δrefuse at `post` (eqs 3–4): `layer_scores` averaged over `layers` (all by default) → [n] each."""
    s_harm, s_ref = layer_scores(hidden, cents, inst, post, where)
    if layers is not None:
        s_harm, s_ref = s_harm[:, layers], s_ref[:, layers]
    return s_harm.mean(1), s_ref.mean(1)


def layer_accuracy(scores: torch.Tensor, is_pos: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Accuracy of `score >= threshold ⇒ positive` per layer; scores [n, layers] → [layers]."""
    pred = scores >= threshold
    return (pred == is_pos[:, None].bool()).double().mean(0)


def auroc(scores, is_pos) -> float:
    """Area under the ROC curve (`sklearn.metrics.roc_auc_score`; ties count half); NaN when one class is
    empty or a score is not finite."""
    from sklearn.metrics import roc_auc_score

    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).numpy()
    y = torch.as_tensor(is_pos).bool().reshape(-1).numpy()
    if len(s) != len(y):
        raise ValueError(f"auroc: {len(s)} scores but {len(y)} labels")
    if y.all() or not y.any() or not np.isfinite(s).all():
        return float("nan")
    return float(roc_auc_score(y, s))
