"""Difference-in-means directions, centroids and the paper's scores (§3.2–3.4, eqs 2–5).

Hidden-state tensors are [n, layers, d] at one position (layers = L+1 entries).
Means accumulate in float64.
"""

from __future__ import annotations

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


def layer_accuracy(scores: torch.Tensor, is_pos: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Accuracy of `score >= threshold ⇒ positive` per layer; scores [n, layers] → [layers]."""
    pred = scores >= threshold
    return (pred == is_pos[:, None].bool()).double().mean(0)


def auroc(scores, is_pos) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is empty."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(is_pos).bool()
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).double().mean()
    eq = (pos[:, None] == neg[None, :]).double().mean()
    return float(gt + 0.5 * eq)
