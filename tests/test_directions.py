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
