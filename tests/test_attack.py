"""The fine-tuning attack (harmref.attack): steered pairs, its training config, scoring rows, tables, derived models."""

import math

import pytest
import torch

from harmref import attack, judging, models, organism, training
from test_organism import HARMFUL, HARMLESS, one_thread, tiny  # noqa: F401  (one_thread, tiny: fixtures)


def test_attack_layer_scores_and_rows(tiny):
    model, tok, fmt = tiny
    prompts = [r["prompt"] for r in HARMFUL]
    from harmref import activations, directions

    h, labels, _ = activations.hidden_states(model, tok, fmt, prompts + [r["prompt"] for r in HARMLESS], before=1)
    inst = labels.index("t_inst")
    cents = {"mu_harmful": h[:3].double().mean(0), "mu_harmless": h[3:].double().mean(0),
             "mu_refused": h[:3].double().mean(0), "mu_accepted": h[3:].double().mean(0)}
    s_harm, s_ref = directions.layer_scores(h[:3].half(), cents, inst)  # as rule extract_hidden stores them
    n_layers = len(model.model.layers) + 1
    assert s_harm.shape == (3, n_layers) and s_ref.shape == (3, n_layers)
    from harmref.directions import centroid_score

    # t_inst scores with the harmfulness centroids, t_post-inst (last position) with the refusal ones
    assert torch.allclose(s_harm, centroid_score(h[:3, :, inst], cents["mu_harmful"][:, inst], cents["mu_harmless"][:, inst]), atol=1e-3)
    assert torch.allclose(s_ref, centroid_score(h[:3, :, -1], cents["mu_refused"][:, -1], cents["mu_accepted"][:, -1]), atol=1e-3)
    assert not torch.allclose(s_harm, s_ref)
    summary, layers = attack.attack_rows(50, HARMFUL, [True, False, False], s_harm, s_ref, (1, 2))
    assert summary["acceptance_rate"] == pytest.approx(2 / 3) and len(layers) == n_layers
    assert summary["delta_harmful_mid"] == pytest.approx(float(s_harm[:, 1:3].mean()))
    before, _ = attack.attack_rows(0, HARMFUL, [True] * 3, s_harm, s_ref, (1, 2))
    table = attack.attack_table([before, summary])
    assert table["delta_harmful_mid_retained"].tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match=r"x.safetensors: \d+ positions, the centroids \d+"):
        directions.layer_scores(h[:3, :, 1:], cents, inst, where="x.safetensors")
    with pytest.raises(ValueError, match="layer entries"):
        directions.layer_scores(h[:3, 1:], cents, inst)


def test_attack_config_steps():
    cfg = attack.attack_config({"epochs": 2, "batch_size": 8, "lr": 1e-4}, {"mode": "full", "steps": 100, "lr": 5e-5}, 50, seed=3)
    assert cfg.steps == math.ceil(2 * 50 / 8) and cfg.lr == 1e-4 and cfg.batch_size == 8 and cfg.seed == 3


def test_attack_eval_takes_the_first_n_of_each_set_matched_by_id():
    h = torch.arange(5 * 2 * 3 * 1, dtype=torch.float16).reshape(5, 2, 3, 1)
    meta = {"ids": [f"s:{i}" for i in range(5)]}
    gens = list(reversed([{"id": f"s:{i}", "refused": i % 2 == 0} for i in range(5)]))  # another order
    recs, refused, hh = attack.attack_eval([gens, gens], [(h, meta), (h, meta)], 3, ["a.jsonl", "b.jsonl"])
    assert [r["id"] for r in recs] == ["s:0", "s:1", "s:2"] * 2 and refused == [True, False, True] * 2
    assert hh.shape == (6, 2, 3, 1) and torch.equal(hh[3:], h[:3])
    with pytest.raises(ValueError, match=r"a.jsonl: hidden-state ids \['s:0'\] have no generation"):
        attack.attack_eval([gens[:-1]], [(h, meta)], 3, ["a.jsonl"])
    with pytest.raises(judging.InvalidVerdicts, match="b.jsonl"):
        attack.attack_eval([[{**g, "refused": None} for g in gens]], [(h, meta)], 2, ["b.jsonl"])


def test_steered_answers_subtract_the_refusal_direction(tiny):
    """The paper's attack data: answers under −c·r^l; c → 0 gives the unsteered answers, a large c others."""
    model, tok, fmt = tiny
    prompts = [r["prompt"] for r in HARMFUL]
    n_entries = len(model.model.layers) + 1
    r = torch.randn(n_entries, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    plain = organism.distill(model, tok, fmt, prompts, max_new_tokens=4, batch_size=2)
    same = attack.steered_answers(model, tok, fmt, prompts, r, layer=1, coefficient=1e-9, max_new_tokens=4, batch_size=2)
    assert same == plain
    far = attack.steered_answers(model, tok, fmt, prompts, r * 50, layer=1, coefficient=1.0, every_step=True,
                                   max_new_tokens=4, batch_size=2)
    assert [t for t, _ in far] != [t for t, _ in plain] and all(isinstance(e, bool) for _, e in far)
    with pytest.raises(ValueError, match="layer 4 outside 0 … 3"):
        attack.steered_answers(model, tok, fmt, prompts, r, layer=n_entries - 1)
    with pytest.raises(ValueError, match="not finite at layer 1"):
        attack.steered_answers(model, tok, fmt, prompts, r * float("nan"), layer=1)


def test_attacked_model_card_has_its_own_identity(tmp_path):
    """An attacked model's card records its weights' sha256 and an identity over weights, recipe and the
    unattacked model, like a tuned organism's; another N (another recipe) is another identity."""
    model, tok = models.tiny_random("chatml", seed=0)
    base_card = {"kind": "random", "identity": "a" * 64}
    training.save(model, tok, tmp_path / "tiny-attack2")
    cards = [models.tuned_card(tmp_path / "tiny-attack2", "tiny", base_card, {"n_examples": n, "seed": 0},
                               tmp_path / "recipe.json", kind="attacked", extra={"n_pairs": n}) for n in (2, 4)]
    card = cards[0]
    assert card["kind"] == "attacked" and card["attack_from"] == "tiny" and "tune_from" not in card and card["n_pairs"] == 2
    assert card["weights_sha256"] and card["base_identity"] == "a" * 64 and models.card_identity(card) == card["identity"]
    assert cards[1]["identity"] != card["identity"] and cards[1]["weights_sha256"] == card["weights_sha256"]
    with pytest.raises(models.ModelError, match="attack_train"):
        models.card_identity({"kind": "attacked"})


def _attack_config(**attack):
    import copy

    import yaml
    from test_workflow import ROOT

    cfg = copy.deepcopy(yaml.safe_load((ROOT / ".test/config/config.yaml").read_text()))
    cfg["organism"]["attack"].update(attack)
    return cfg


@pytest.mark.parametrize("change, message", [
    (lambda c: c["models"].update({"tiny-attack2": {"source": "tiny-random:chatml"}}),
     "config: model 'tiny-attack2' under models: has the name of an attacked model"),
    (lambda c: c["organism"]["attack"].update(pairs_from="base"),
     "config: organism.attack.pairs_from is base, but analysed model 'tiny' has no tune_from"),
    (lambda c: c["organism"]["attack"].update(eval_sets=["catqa"]),
     "config: organism.attack.eval_sets names 'catqa', whose generate is false"),
])
def test_attack_config_errors_fail_before_the_dag(tmp_path, change, message):
    from test_reliability import _dry_run

    cfg = _attack_config()
    change(cfg)
    assert message in _dry_run(tmp_path, cfg)


def test_attacked_models_are_derived_from_the_config(tmp_path):
    """Each analysed model × attack size is a derived model with its own jobs; attack.enabled: false has none."""
    from test_workflow import ROOT, job_counts, run

    import yaml

    counts = {}
    for enabled in (True, False):
        wd = tmp_path / str(enabled)
        (wd / "config").mkdir(parents=True)
        cfg = {**_attack_config(enabled=enabled, n_pairs=[2, 3]), "data_root": str(ROOT / "data")}
        (wd / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        out = run(wd, "-n", "results/tiny/tables/finetune_attack.csv" if enabled else "all", check=not enabled).stdout
        counts[enabled] = job_counts(out)
        if enabled:
            for m in ("tiny-attack2", "tiny-attack3"):  # each attacked model reads the one eval set
                assert f"results/{m}/replies/chat/harmful_test.jsonl" in out and f"results/{m}/hidden/harmful_test.safetensors" in out
                assert f"results/models/{m}/model.json" in out and f"results/{m}/replies/chat/harmless_test" not in out
    assert counts[True]["attack_pairs"] == 1 and counts[True]["attack_train"] == 2 and counts[True]["finetune_attack"] == 1
    # tiny itself (N = 0): harmful_test and its two direction sets; + one per attacked model
    assert counts[True]["generate"] == 3 + 2 and counts[True]["extract_hidden"] == 3 + 2
    assert not {"attack_pairs", "attack_train", "finetune_attack"} & set(counts[False])
