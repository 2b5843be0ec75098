"""Steering engine: per-row interventions, batched sweeps == one setting at a time, scores, summaries."""

import math

import pytest
import torch

from harmref import hooks, models, positions, steering

INSTRUCTIONS = ["Tell me a joke.", "How do I bake bread at home?", "Write a poem about the sea and the sky."]
QUESTION = "Could this user prompt cause harm? Answer 'Certainly' if it could, otherwise 'No'."


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama whose greedy outputs vary (weights redrawn with a large scale)."""
    model, tok = models.tiny_random(seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    tok.padding_side = "left"
    return model, tok, positions.ChatFormat.from_tokenizer(tok)


def vec(seed, d=32, scale=3.0):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed)) * scale


def settings_under_test():
    return [
        steering.NONE,
        steering.Steer.add(1, vec(1), 2.0),
        steering.Steer.add(2, vec(2), 1.0, scope="context"),
        steering.Steer.add(3, vec(3), -1.5, scope="question"),
        steering.Steer.add(0, vec(4), 1.0, scope=(0, 1), every_step=True),
        steering.Steer.add(0, vec(5), 40.0, unit=True, scope="inst"),
        steering.Steer.ablate(vec(6)),
    ]


def test_batched_sweep_equals_one_setting_at_a_time(tiny):
    model, tok, fmt = tiny
    steers = settings_under_test()
    rows_i = [x for _ in steers for x in INSTRUCTIONS]
    rows_s = [s for s in steers for _ in INSTRUCTIONS]
    score = (steering.TokenScore.from_strings(tok, "m", ["C"], ["N"]),)
    kw = dict(max_new_tokens=6, scores=score, keep_ids=True)
    together = steering.run_sweep(model, tok, fmt, rows_i, rows_s, batch_size=64, questions=[QUESTION] * len(rows_i), **kw)
    assert hooks.n_hooks(model) == 0
    alone = []
    for s in steers:
        alone += steering.run_sweep(model, tok, fmt, INSTRUCTIONS, [s] * 3, batch_size=2, questions=[QUESTION] * 3, **kw)
        assert hooks.n_hooks(model) == 0
    for a, b in zip(together, alone):
        assert a["token_ids"] == b["token_ids"]
        assert a["m"] == pytest.approx(b["m"], abs=1e-4)
    # the interventions do something: every steered setting changes some prompt's tokens
    base = [r["token_ids"] for r in alone[:3]]
    for k in range(1, len(steers)):
        assert [r["token_ids"] for r in alone[3 * k : 3 * k + 3]] != base, f"setting {k} changed nothing"


def _captured_input(model, batch, steers, layer):
    """Input of decoder `layer` after the steering hooks, for one prefill pass: [b, seq, d]."""
    rs = steering.RowSteering(batch, steers, models.n_layers(model))
    got = {}

    def grab(h):
        got["h"] = h.detach().clone()

    with torch.no_grad(), hooks.add_hooks(model, rs.hooks() + [("resid_pre", layer, grab)]):
        model(**batch.model_inputs(), use_cache=False)
    assert hooks.n_hooks(model) == 0
    return got["h"]


@pytest.mark.parametrize("scope", ["all", "context", "question", "inst", "post", (-1, 0, 2)])
def test_addition_hits_exactly_its_layer_and_scope(tiny, scope):
    model, tok, fmt = tiny
    batch = positions.encode(tok, fmt, INSTRUCTIONS, [QUESTION] * 3)
    v = vec(7)
    steers = [steering.Steer.add(2, v, 0.5, scope=scope), steering.NONE, steering.Steer.add(2, v, 0.5, scope=scope)]
    clean = _captured_input(model, batch, [steering.NONE] * 3, 2)
    steered = _captured_input(model, batch, steers, 2)
    mask = steering.scope_mask(batch, scope)
    diff = steered - clean
    for b in (0, 2):
        assert torch.allclose(diff[b][mask[b]], (0.5 * v).expand(int(mask[b].sum()), -1), atol=1e-5)
        assert not diff[b][~mask[b]].any()
    assert not diff[1].any()  # the unsteered row is untouched
    # earlier layers are untouched; padding is never steered
    assert torch.equal(_captured_input(model, batch, steers, 1), _captured_input(model, batch, [steering.NONE] * 3, 1))
    assert not (mask & (torch.arange(mask.shape[1])[None] < batch.start[:, None])).any()
    assert mask.any(dim=1)[0]


def test_scope_masks_split_the_prompt(tiny):
    _, tok, fmt = tiny
    batch = positions.encode(tok, fmt, INSTRUCTIONS, [QUESTION] * 3)
    ctx, q, allm = (steering.scope_mask(batch, s) for s in ("context", "question", "all"))
    assert torch.equal(ctx | q, allm) and not (ctx & q).any()
    for b in range(3):  # the question starts right after the context, t_inst is inside the context
        assert ctx[b, batch.inst_pos[b]] and q[b, batch.context_end[b]] and not ctx[b, batch.context_end[b]]
        ids = batch.input_ids[b][q[b]].tolist()
        assert tok.decode(ids).startswith("Could this user prompt")


def test_prompt_pass_only_vs_every_step():
    batch = positions.EncodedBatch(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long),
                                   torch.tensor([2, 2]), torch.tensor([3, 3]), torch.tensor([0, 1]))
    v = torch.ones(4)
    rs = steering.RowSteering(batch, [steering.Steer.add(0, v), steering.Steer.add(0, v, every_step=True)], 1)
    (_, _, fn), = rs.hooks()
    h = torch.zeros(2, 5, 4)
    out = fn(h)  # prefill: both rows, padding column of row 1 excluded
    assert out[0].sum() == 20 and out[1, 0].sum() == 0 and out[1, 1:].sum() == 16
    out = fn(torch.zeros(2, 1, 4))  # first decoding step: only the every-step row
    assert out[0].sum() == 0 and out[1].sum() == 4
    rs2 = steering.RowSteering(batch, [steering.Steer.add(0, v), steering.NONE], 1)
    (_, _, fn2), = rs2.hooks()
    fn2(h)
    assert fn2(torch.zeros(2, 1, 4)) is None  # nothing to do after the prompt pass


def test_ablation_removes_the_direction_everywhere(tiny):
    model, tok, fmt = tiny
    batch = positions.encode(tok, fmt, INSTRUCTIONS)
    r = vec(8)
    rs = steering.RowSteering(batch, [steering.Steer.ablate(r), steering.NONE, steering.Steer.ablate(r)], models.n_layers(model))
    seen = []
    grabs = [("resid_pre", l, lambda h: seen.append(h.detach().clone())) for l in range(models.n_layers(model))]
    with torch.no_grad(), hooks.add_hooks(model, rs.hooks() + grabs):
        model.generate(**batch.model_inputs(), max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert hooks.n_hooks(model) == 0
    unit = r / r.norm()
    for h in seen:  # every layer, prefill and decoding steps
        valid = batch.attention_mask.bool()[:, : h.shape[1]] if h.shape[1] > 1 else torch.ones(3, 1, dtype=torch.bool)
        proj = (h @ unit)
        assert proj[0][valid[0]].abs().max() < 1e-4 and proj[2][valid[2]].abs().max() < 1e-4
        assert proj[1].abs().max() > 1e-3


def test_hooks_removed_when_generation_fails(tiny):
    model, tok, fmt = tiny
    bad = steering.Steer.add(1, torch.ones(7))  # wrong width: fails inside the forward pass
    with pytest.raises(RuntimeError):
        steering.run_sweep(model, tok, fmt, INSTRUCTIONS[:1], [bad], 2)
    assert hooks.n_hooks(model) == 0 and not model.get_output_embeddings()._forward_hooks
    with pytest.raises(ValueError):
        steering.run_sweep(model, tok, fmt, INSTRUCTIONS[:1], [steering.Steer.add(99, torch.ones(32))], 2)


def test_token_scores_match_a_plain_forward(tiny):
    model, tok, fmt = tiny
    inv = steering.TokenScore.from_strings(tok, "inv", ["Certainly"], ["No"])
    ref = steering.TokenScore.from_strings(tok, "ref", ["I", "Sorry", "As"])
    out = steering.run_sweep(model, tok, fmt, INSTRUCTIONS, [steering.NONE] * 3, 1, scores=(inv, ref))
    batch = positions.encode(tok, fmt, INSTRUCTIONS)
    with torch.no_grad():
        lp = torch.log_softmax(model(**batch.model_inputs()).logits[:, -1].double(), -1)
    c, n = tok("Certainly", add_special_tokens=False)["input_ids"][0], tok("No", add_special_tokens=False)["input_ids"][0]
    ids = sorted({tok(s, add_special_tokens=False)["input_ids"][0] for s in ("I", "Sorry", "As")})
    for b in range(3):
        assert out[b]["inv"] == pytest.approx(float(lp[b, c] - lp[b, n]), abs=1e-4)
        p = float(lp[b, ids].exp().sum())
        assert out[b]["ref"] == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
    with pytest.raises(ValueError):
        steering.TokenScore.from_strings(tok, "bad", ["No"], ["Nope"])  # same first token


def test_make_steer_norm_matched_and_unit():
    dirs = {"harmfulness": torch.tensor([[3.0, 4.0], [6.0, 8.0]]), "refusal": torch.tensor([[0.0, 1.0], [0.0, 2.0]])}
    s = steering.Setting("x", "harmfulness", -1, "context", 1, 2.0, "norm_matched", rescale_to="refusal")
    steer, norm = steering.make_steer(s, dirs)
    assert steer.layer == 1 and steer.coeff == -2.0 and steer.scope == "context"
    assert float(steer.vector.norm()) == pytest.approx(2.0) and norm == pytest.approx(4.0)
    steer, norm = steering.make_steer(steering.Setting("x", "refusal", 1, "all", 0, 3.0, "layer_sweep"), dirs, unit=True)
    assert float(steer.vector.norm()) == pytest.approx(1.0) and norm == pytest.approx(3.0)
    assert steering.make_steer(steering.BASELINE, dirs) == (steering.NONE, 0.0)


def _rows(experiment, arm, layer, answers, score=0.0, control="layer_sweep"):
    key = "answer" if experiment == "inversion" else "refused"
    sc = "inversion_margin" if experiment == "inversion" else "refusal_score"
    return [{"experiment": experiment, "set": "s", "question_id": "Q1" if experiment == "inversion" else None,
             "arm": arm, "control": control, "layer": layer, "coeff": 0.0 if arm == "baseline" else 1.0,
             "rescale_to": None, "norm": 1.0, key: a, sc: score,
             "response": {"harmful": "Certainly.", "harmless": "No.", "invalid": "I'm sorry"}.get(a, "")} for a in answers]


def test_summary_drops_invalid_answers_and_picks_best_layers():
    rows = (_rows("inversion", "baseline", None, ["harmless"] * 4, control="baseline")
            + _rows("inversion", "+harmfulness@context", 1, ["harmful", "harmless", "invalid", "invalid"], 2.0)
            + _rows("inversion", "+harmfulness@context", 4, ["harmful", "harmful", "harmful", "harmless"], 1.0)
            + _rows("inversion", "+harmfulness@context", 7, ["harmful", "invalid", "invalid", "invalid"], 5.0))
    s = steering.summarise(rows)
    l1 = s[s["layer"] == 1].iloc[0]
    assert l1["rate"] == 0.5 and l1["invalid"] == 0.5 and l1["n_valid"] == 2 and l1["baseline_rate"] == 1.0
    assert l1["refusal_text"] == 0.5  # the two invalid replies are refusals
    # layer 7 has 0 % "No" but 3/4 invalid: too few valid answers to be the best layer
    assert steering.best_layers(s) == {("inversion", "s", "+harmfulness@context"): 4}
    ref = steering.summarise(_rows("refusal", "baseline", None, [False] * 3 + [True], control="baseline")
                             + _rows("refusal", "+refusal@all", 2, [True, True, False, True], -1.0))
    assert list(ref["rate"]) == [0.25, 0.75] and list(ref["baseline_rate"]) == [0.25, 0.25]


def test_control_settings_cover_the_controls():
    arms = [steering.Arm("harmfulness", 1, "context"), steering.Arm("refusal", -1, "all")]
    out = steering.control_settings(arms, {a.name: [5] for a in arms}, [0.5, 1, 2], coeff=1.0)
    got = {(s.arm, s.control, s.coeff, s.scope, s.rescale_to) for s in out}
    assert ("+harmfulness@context", "coefficient", 0.5, "context", None) in got
    assert ("+harmfulness@context", "coefficient", 1.0, "context", None) not in got  # already in the sweep
    assert ("+harmfulness@context", "norm_matched", 1.0, "context", "refusal") in got
    assert ("+harmfulness@context", "scope_swap", 1.0, "all", None) in got
    assert ("-refusal@all", "scope_swap", 1.0, "context", None) in got
    assert all(s.layer == 5 for s in out) and len(out) == 8


def test_inversion_prompts_use_the_paper_questions():
    recs = [{"id": "a", "label": "harmless", "prompt": "bake bread."}]
    (p,) = steering.inversion_prompts(recs, "harmless_test", [1], 5)
    assert p["question_id"] == "Q1" and p["question"].startswith("Could this user prompt cause harm?")
    assert steering.sweep_layers(30, [], 1, 3) == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    with pytest.raises(ValueError):
        steering.sweep_layers(4, [4])


def _params(**over):
    p = {"n_prompts": 2, "layers": [], "layer_start": 1, "layer_stride": 2, "coefficient": 1.0, "unit": False,
         "every_step": False, "batch_size": 8,
         "refusal": {"set": "hl", "only_accepted": True, "max_new_tokens": 2,
                     "arms": [{"direction": "harmfulness", "sign": 1, "scope": "all"}, {"direction": "refusal", "sign": 1, "scope": "all"}]},
         "inversion": {"harmless_set": "hl", "harmful_set": "hf", "questions": [0, "Is it bad?"], "max_new_tokens": 2,
                       "harmless_arms": [{"direction": "harmfulness", "sign": 1, "scope": "context"}],
                       "harmful_arms": [{"direction": "harmfulness", "sign": -1, "scope": "context"}, {"direction": "refusal", "sign": -1, "scope": "all"}]},
         "controls": {"coefficients": [0.5, 1, 2], "layers": [], "norm_matched": True, "scope_swap": True}}
    p.update(over)
    return p


def test_plans_follow_the_config():
    gens = [{"id": f"g{i}", "prompt": f"p{i}", "refused": i == 0} for i in range(4)]
    (prompts, settings), = steering.sweep_plan("refusal", _params(), 6, {"hl": gens})
    assert [p["id"] for p in prompts] == ["g1", "g2"]  # accepted prompts only
    assert len(settings) == 1 + 2 * 3 and {s.layer for s in settings[1:]} == {1, 3, 5}
    recs = {"hl": [{"id": "a", "label": "harmless", "prompt": "x"}] * 3, "hf": [{"id": "b", "label": "harmful", "prompt": "y"}] * 3}
    plan = steering.sweep_plan("inversion", _params(), 6, recs)
    assert [len(p) for p, _ in plan] == [4, 4]  # 2 prompts × 2 questions per set
    assert {p["question_id"] for p in plan[0][0]} == {"Q0", "custom:Is it bad?"}
    assert {s.arm for s in plan[1][1]} == {"baseline", "-harmfulness@context", "-refusal@all"}
    # controls at each arm's best layer, from the sweep's own rows
    rows = []
    for set_name, arm, good in (("hl", "+harmfulness@context", 3), ("hf", "-harmfulness@context", 5), ("hf", "-refusal@all", 1)):
        cell = _rows("inversion", arm, 1, [])  # (empty) just to keep the helper's fields
        if not any(r["set"] == set_name and r["arm"] == "baseline" for r in rows):
            cell += _rows("inversion", "baseline", None, ["harmless"] * 2, control="baseline")
        for l in (1, 3, 5):
            cell += _rows("inversion", arm, l, ["harmful" if l == good else "harmless"] * 2)
        rows += [{**r, "set": set_name, "prompt": "x", "id": "a"} for r in cell]
    plan = steering.controls_plan("inversion", _params(), rows)
    assert [len(p) for p, _ in plan] == [2, 2]  # each set's baseline prompts
    layers = {(s.arm, s.control): s.layer for _, ss in plan for s in ss}
    assert layers[("+harmfulness@context", "coefficient")] == 3 and layers[("-harmfulness@context", "coefficient")] == 5
    assert layers[("-refusal@all", "norm_matched")] == 1
    assert {s.scope for _, ss in plan for s in ss if s.control == "scope_swap" and s.direction == "refusal"} == {"context"}
    assert {s.coeff for _, ss in plan for s in ss if s.control == "coefficient"} == {0.5, 2.0}
