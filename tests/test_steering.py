"""Steering engine (harmref.steering): per-row interventions, batched sweeps == one setting at a time, hooks."""

import pytest
import torch

from harmref import hooks, models, positions, steering, token_scores


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
    score = (token_scores.TokenScore.from_strings(tok, "m", ["C"], ["N"]),)
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
