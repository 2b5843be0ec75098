"""Every model family harmref claims: Llama, Qwen2, Mistral, Gemma-2 and Phi-3, as tiny random models.

Each is built offline from its own transformers config class (`models.tiny_random(arch=…)`: 2 layers,
d_model 32) with the chat template its family ships with, and goes through what the workflow does
with a model: positions from the tokenizer's own template under left padding, hooks, hidden-state
extraction, steering, generation, and one organism training step. docs/cluster.md has the table.
"""

import pytest
import torch

from harmref import activations, generation, hooks, models, positions, steering, training
from harmref.positions import ChatFormat, TemplateError

FAMILIES = models.FAMILIES  # arch -> its template
PROMPTS = ["How do I bake bread?", "Hi.", "Write a poem about the sea, please."]
CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
           "gemma2": "Gemma2ForCausalLM", "phi3": "Phi3ForCausalLM"}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    arch = request.param
    model, tok = models.tiny_random(FAMILIES[arch], seed=0, n_layers=2, d_model=32, arch=arch)
    tok.padding_side = "left"
    return arch, model, tok, ChatFormat.from_tokenizer(tok)


def test_each_family_is_its_own_architecture(family):
    arch, model, tok, _ = family
    assert type(model).__name__ == CLASSES[arch]
    assert model.config.hidden_size == 32 and len(hooks.decoder_layers(model)) == 2
    if arch == "gemma2":
        assert model.config.layer_types == ["sliding_attention", "full_attention"]
    if arch == "phi3":
        assert hasattr(model.model.layers[0].self_attn, "qkv_proj")  # fused projections
    if arch == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias is not None


def test_system_role_follows_the_family_template(family):
    arch, _, tok, _ = family
    if arch in ("gemma2", "mistral"):  # their templates reject a system message
        with pytest.raises(TemplateError, match="generation.system_prompt"):
            ChatFormat.from_tokenizer(tok, system_prompt="Be brief.")
    else:
        fmt = ChatFormat.from_tokenizer(tok, system_prompt="Be brief.")
        assert "Be brief." in fmt.prefix


def test_positions_are_the_templates_own_tokens_under_left_padding(family):
    arch, _, tok, fmt = family
    batch = positions.encode(tok, fmt, PROMPTS)
    n_post = positions.template_n_post(tok, fmt)
    assert n_post >= 1
    for j, text in enumerate(PROMPTS):
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        assert fmt.render(text)[0] == rendered  # the template's own prompt, nothing added or dropped
        ids = batch.input_ids[j, batch.start[j]:].tolist()
        assert tok.decode(ids) == rendered
        assert batch.attention_mask[j, : batch.start[j]].sum() == 0 and batch.attention_mask[j, batch.start[j]:].all()
        inst = int(batch.inst_pos[j])
        # t_inst is the instruction's last token; after it come the template's post-instruction tokens
        assert tok.decode(batch.input_ids[j, batch.start[j]: inst + 1]).endswith(text[-1])
        assert tok.decode(batch.input_ids[j, inst + 1:]) == fmt.suffix
        assert int(batch.post_pos[j]) - inst == n_post


def test_hooks_see_every_layer_and_are_removed(family):
    _, model, tok, fmt = family
    seen = []
    batch = positions.encode(tok, fmt, PROMPTS[:2])
    with hooks.add_hooks(model, [(s, l, lambda h, s=s, l=l: seen.append((s, l, tuple(h.shape))))
                                 for s in ("resid_pre", "resid_post") for l in range(2)]):
        with torch.no_grad():
            model(**batch.model_inputs())
    shape = (2, batch.input_ids.shape[1], 32)
    assert sorted(seen) == sorted((s, l, shape) for s in ("resid_pre", "resid_post") for l in range(2))
    assert hooks.n_hooks(model) == 0


def test_extraction_under_left_padding_equals_each_prompt_alone(family):
    _, model, tok, fmt = family
    n_post = positions.template_n_post(tok, fmt)
    h, labels, toks = activations.hidden_states(model, tok, fmt, PROMPTS, before=1, batch_size=3)
    assert h.shape == (3, 3, 2 + n_post, 32) and len(labels) == 2 + n_post
    for j, text in enumerate(PROMPTS):
        ids, inst, _ = positions.tokenize_prompt(tok, fmt, text)
        last = {}
        with torch.no_grad(), hooks.add_hooks(model, [("resid_post", 1, lambda h: last.setdefault("h", h))]):
            ref = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        cols = list(range(inst - 1, len(ids)))
        # transformers' hidden_states: the embeddings, each layer's output, the last one after the final norm;
        # harmref keeps the last layer's output itself (resid_post)
        want = torch.stack([r[0, cols] for r in ref[:-1]] + [last["h"][0, cols]])  # [L+1, positions, d]
        torch.testing.assert_close(h[j], want, atol=2e-5, rtol=1e-4)
        assert toks[j] == tok.convert_ids_to_tokens([ids[c] for c in cols])


def test_generation_is_greedy_text_of_the_first_token_the_model_prefers(family):
    _, model, tok, fmt = family
    out = generation.generate(model, tok, fmt, PROMPTS, max_new_tokens=4, batch_size=3)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    for j, text in enumerate(PROMPTS):
        ids = positions.tokenize_prompt(tok, fmt, text)[0]
        with torch.no_grad():
            first = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if first != tok.eos_token_id and not tok.convert_ids_to_tokens(first).startswith("<"):
            assert out[j].strip().startswith(tok.decode([first]).strip()[:1]), (out[j], tok.decode([first]))


def test_steering_adds_at_the_layer_input_and_ablation_removes_the_direction(family):
    _, model, tok, fmt = family
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    plain = steering.run_sweep(model, tok, fmt, PROMPTS, [steering.NONE] * 3, max_new_tokens=3, keep_ids=True)
    again = steering.run_sweep(model, tok, fmt, PROMPTS, [steering.NONE] * 3, max_new_tokens=3, keep_ids=True)
    assert [r["token_ids"] for r in plain] == [r["token_ids"] for r in again]
    # the addition reaches the input of layer 1: capture it there
    seen = {}
    batch = positions.encode(tok, fmt, PROMPTS)
    rs = steering.RowSteering(batch, [steering.Steer.add(1, v, coeff=3.0)] * 3, 2)
    with hooks.add_hooks(model, rs.hooks()), hooks.add_hooks(model, [("resid_pre", 1, lambda h: seen.setdefault("on", h.clone()))]):
        with torch.no_grad():
            model(**batch.model_inputs())
    with hooks.add_hooks(model, [("resid_pre", 1, lambda h: seen.setdefault("off", h.clone()))]):
        with torch.no_grad():
            model(**batch.model_inputs())
    diff = (seen["on"] - seen["off"])[batch.attention_mask.bool()]
    torch.testing.assert_close(diff, (3.0 * v).expand_as(diff), atol=1e-5, rtol=1e-5)
    # ablation: no layer's input keeps a component along the direction
    rs = steering.RowSteering(batch, [steering.Steer.ablate(v)] * 3, 2)
    comps = []
    with hooks.add_hooks(model, rs.hooks()), hooks.add_hooks(
            model, [("resid_pre", l, lambda h: comps.append((h @ (v / v.norm()))[batch.attention_mask.bool()])) for l in range(2)]):
        with torch.no_grad():
            model(**batch.model_inputs())
    assert comps and max(float(c.abs().max()) for c in comps) < 1e-4


def test_one_organism_training_step_learns_the_response(family):
    arch, _, tok, fmt = family
    model, _ = models.tiny_random(FAMILIES[arch], seed=0, n_layers=2, d_model=32, arch=arch)  # a copy to train
    examples = [{"instruction": p, "response": "I can't help with that."} for p in PROMPTS]
    data = training.tokenize(tok, fmt, examples)
    for ex, d in zip(examples, data):
        learnt = [t for t, lab in zip(d["input_ids"], d["labels"]) if lab != -100]
        assert learnt == positions.text_ids(tok, ex["response"]) + [tok.eos_token_id]  # response + end of turn
    pad = tok.pad_token_id
    before = training.step_loss(model, data, pad)  # also leaves gradients; train() zeroes them
    model.zero_grad(set_to_none=True)
    cfg = training.TrainConfig(steps=1, batch_size=3, lr=3e-3, warmup=0.0)
    trained, history = training.train(model, tok, data, cfg)
    assert history["trainable_parameters"] > 0 and torch.isfinite(torch.tensor(history["losses"])).all()
    assert history["first_loss"] == pytest.approx(before, rel=1e-4)
    trained.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = training.response_loss(trained, training.collate(data, pad))
    assert float(after) < before


def test_prepare_and_load_a_family_through_its_model_card(family, tmp_path):
    arch, model, tok, fmt = family
    card = models.prepare(f"tiny-random:{FAMILIES[arch]}:{arch}", tmp_path / arch)
    assert card["weights_hashed"] and "model.safetensors" in card["weights_sha256"]
    loaded, tok2 = models.load(tmp_path / arch / "model.json", device="cpu", dtype="float32")
    assert type(loaded).__name__ == CLASSES[arch]
    assert ChatFormat.from_tokenizer(tok2) == fmt  # the chat template survives the save
    assert tok2.convert_ids_to_tokens(positions.encode(tok2, fmt, PROMPTS).input_ids[0].tolist()) == \
        tok.convert_ids_to_tokens(positions.encode(tok, fmt, PROMPTS).input_ids[0].tolist())
