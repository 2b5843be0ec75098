import numpy as np
import pytest
import torch

from harmref import directions, geometry


def _toy(n=20, layers=3, pos=4, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    axis = torch.zeros(d)
    axis[0] = 3.0
    harmful = torch.randn(n, layers, pos, d, generator=g) + axis
    harmless = torch.randn(n, layers, pos, d, generator=g) - axis
    return harmful, harmless


def test_diff_in_means_and_scores():
    harmful, harmless = _toy()
    v = directions.diff_in_means(harmful[:, :, 2], harmless[:, :, 2])
    assert v.shape == (3, 8) and v[:, 0].min() > 4
    s = directions.centroid_score(harmful[:, :, 2], harmful[:, :, 2].mean(0), harmless[:, :, 2].mean(0))
    assert (s.mean(0) > 0).all()
    acc = directions.layer_accuracy(torch.cat([s, -s]), torch.tensor([1] * 20 + [0] * 20))
    assert acc.min() > 0.9
    assert directions.auroc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert directions.auroc([0, 1], [1, 0]) == 0.0


def test_fit_uses_behaviour_groups_and_falls_back():
    harmful, harmless = _toy()
    refused_h = [True] * 15 + [False] * 5
    refused_l = [False] * 18 + [True] * 2
    cents, notes = geometry.fit(harmful, refused_h, harmless, refused_l, "refused", min_group=5)
    assert notes["harmful"]["n"] == 15 and notes["refused"]["n"] == 17 and notes["accepted"]["n"] == 23
    torch.testing.assert_close(cents["mu_harmful"], harmful[:15].double().mean(0))
    _, notes = geometry.fit(harmful, [False] * 20, harmless, [False] * 20, "refused", min_group=5)
    assert notes["harmful"]["fallback"] is True
    dirs = geometry.directions(cents, inst=2)
    assert dirs["harmfulness"].shape == (3, 8) and dirs["refusal"].shape == (3, 8)


def test_cosine_table_and_clustering():
    harmful, harmless = _toy()
    cents, _ = geometry.fit(harmful, [True] * 20, harmless, [False] * 20)
    cos = geometry.cosine_table(cents, inst=2)
    assert len(cos) == 3 and cos["cos_harm_inst__refusal_post"].between(-1, 1).all()
    clust = geometry.clustering_table(
        [("t", torch.cat([harmful, harmless]), ["harmful"] * 20 + ["harmless"] * 20, [True] * 20 + [False] * 20)],
        cents, ["a", "b", "t_inst", "post"],
    )
    rh = clust[(clust.group == "refused-harmful") & (clust.position == "t_inst")]
    ah = clust[(clust.group == "accepted-harmless") & (clust.position == "t_inst")]
    assert (rh.mean_s > 0).all() and (ah.mean_s < 0).all()


# ----------------------------------------------------- one function per score: the same numbers as the old code
def _old_auroc(scores, is_pos) -> float:
    """The hand-written O(n²) AUROC that `directions.auroc` replaced (ties count half)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(is_pos).bool()
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float((pos[:, None] > neg[None, :]).double().mean() + 0.5 * (pos[:, None] == neg[None, :]).double().mean())


def test_auroc_is_sklearns_and_matches_the_pairwise_count():
    g = torch.Generator().manual_seed(1)
    for n_pos, n_neg, ties in ((7, 5, False), (30, 41, True), (1, 1, True), (200, 3, False)):
        s = torch.randn(n_pos + n_neg, generator=g)
        if ties:
            s = torch.round(s * 2) / 2  # many tied scores across the classes
        y = torch.tensor([True] * n_pos + [False] * n_neg)[torch.randperm(n_pos + n_neg, generator=g)]
        assert abs(directions.auroc(s, y) - _old_auroc(s, y)) < 1e-12
        assert abs(directions.auroc(s.numpy(), y.tolist()) - _old_auroc(s, y)) < 1e-12
    assert directions.auroc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5
    for s, y in (([1.0, 2.0], [1, 1]), ([1.0, 2.0], [0, 0]), ([], []), ([1.0, float("nan")], [1, 0])):
        assert np.isnan(directions.auroc(s, y))
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        directions.auroc([1.0, 2.0, 3.0], [1, 0])


def _cents(seed=2, layers=3, pos=4, d=8):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(layers, pos, d, generator=g).double() for k in ("mu_harmful", "mu_harmless", "mu_refused", "mu_accepted")}


def test_score_functions_equal_the_per_caller_formulas():
    """clustering_scores / layer_scores / belief_scores give exactly what each caller computed before."""
    harmful, harmless = _toy()
    h = torch.cat([harmful, harmless]).half()  # stored as extract_hidden stores them
    cents, inst = _cents(), 2
    old_s = {p: directions.centroid_score(h[:, :, p], cents["mu_harmful"][:, p], cents["mu_harmless"][:, p]) for p in range(4)}
    s = directions.clustering_scores(h, cents["mu_harmful"], cents["mu_harmless"])
    assert s.shape == (40, 3, 4) and s.dtype == torch.float64
    for p in range(4):
        assert torch.equal(s[:, :, p], old_s[p])
    s_harm, s_ref = directions.layer_scores(h, cents, inst)
    assert torch.equal(s_harm, old_s[inst])  # organism.attack_scores before (h.float() first: exact for half)
    assert torch.equal(s_ref, directions.centroid_score(h.float()[:, :, -1], cents["mu_refused"][:, -1], cents["mu_accepted"][:, -1]))
    dh, dr = directions.belief_scores(h, cents, inst)  # geometry.beliefs before
    assert torch.equal(dh, directions.belief_score(h[:, :, inst], cents["mu_harmful"][:, inst], cents["mu_harmless"][:, inst]))
    assert torch.equal(dr, directions.belief_score(h[:, :, -1], cents["mu_refused"][:, -1], cents["mu_accepted"][:, -1]))
    dh, dr = directions.belief_scores(h, cents, inst, post=1, layers=slice(1, 3))
    assert torch.equal(dh, old_s[inst][:, 1:3].mean(1))
    assert torch.equal(dr, directions.centroid_score(h[:, :, 1], cents["mu_refused"][:, 1], cents["mu_accepted"][:, 1])[:, 1:3].mean(1))
    assert not torch.equal(s_harm, s_ref)


def test_layer_scores_name_the_mismatch():
    harmful, _ = _toy()
    cents = _cents()
    with pytest.raises(ValueError, match=r"x.safetensors: 3 positions, the centroids 4"):
        directions.layer_scores(harmful[:, :, 1:], cents, 0, where="x.safetensors")
    with pytest.raises(ValueError, match="2 layer entries of width 8, the centroids 3 of width 8"):
        directions.layer_scores(harmful[:, 1:], cents, 0)
    with pytest.raises(ValueError, match="expected hidden states"):
        directions.layer_scores(harmful[:, :, 0], cents, 0)


def test_geometry_tables_unchanged():
    """geometry's clustering / belief / accuracy tables equal the per-position formulas they used to inline."""
    harmful, harmless = _toy(n=60, layers=29, d=16)
    h = torch.cat([harmful, harmless])
    labels, refused = ["harmful"] * 60 + ["harmless"] * 60, [True] * 45 + [False] * 75
    cents, _ = geometry.fit(harmful, refused[:60], harmless, refused[60:])
    inst = 2
    b = geometry.beliefs([("t", h, labels, refused, [f"p{i}" for i in range(120)])], cents, inst)
    old_dh = directions.belief_score(h[:, :, inst], cents["mu_harmful"][:, inst], cents["mu_harmless"][:, inst])
    old_dr = directions.belief_score(h[:, :, -1], cents["mu_refused"][:, -1], cents["mu_accepted"][:, -1])
    assert b["delta_harmful"].tolist() == old_dh.tolist() and b["delta_refuse"].tolist() == old_dr.tolist()
    clust = geometry.clustering_table([("t", h, labels, refused)], cents, ["a", "b", "t_inst", "post"])
    s1 = directions.centroid_score(h[:, :, 1], cents["mu_harmful"][:, 1], cents["mu_harmless"][:, 1])
    rh = torch.tensor([r and lab == "harmful" for lab, r in zip(labels, refused)])
    got = clust[(clust.group == "refused-harmful") & (clust.position == "b")].sort_values("layer")
    assert got["mean_s"].tolist() == s1[rh].mean(0).tolist() and got["sd_s"].tolist() == s1[rh].std(0).tolist()
    acc = geometry.harmfulness_accuracy(h, torch.tensor([lab == "harmful" for lab in labels]), cents, inst)
    is_h = torch.tensor([lab == "harmful" for lab in labels])
    for pos, i in (("inst", inst), ("post", -1)):
        s = directions.centroid_score(h[:, :, i], cents["mu_harmful"][:, i], cents["mu_harmless"][:, i])
        assert acc[f"acc_{pos}"].iloc[:29].tolist() == directions.layer_accuracy(s, is_h).tolist()
        assert acc[f"auroc_{pos}"].iloc[:29].tolist() == pytest.approx([_old_auroc(s[:, l], is_h) for l in range(29)], abs=1e-12)
        d = directions.belief_score(h[:, :, i], cents["mu_harmful"][:, i], cents["mu_harmless"][:, i])
        assert acc[f"acc_{pos}"].iloc[29] == float(((d >= 0) == is_h).double().mean())
        assert acc[f"auroc_{pos}"].iloc[29] == pytest.approx(_old_auroc(d, is_h), abs=1e-12)
