"""Fine-tuning (harmref.training): masking, collation, loss, micro-batches, batch order, full and LoRA training, recipe, save."""

import pytest
import torch

from harmref import inversion, io, models, organism, training
from test_organism import HARMFUL, HARMLESS, one_thread, tiny  # noqa: F401  (one_thread, tiny: fixtures)


def fresh():
    """A tiny model whose (frozen, tied) embeddings are scaled up: at the default init std of 0.02 the
    logits are nearly flat and a frozen head cannot express a peaked distribution in a few steps."""
    model, tok = models.tiny_random("chatml", seed=0)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(25)
    return model, tok


def examples():
    return (organism.refusal_examples(HARMFUL, seed=0)
            + [{"id": r["id"], "instruction": r["prompt"], "question": None, "response": "Sure, here it is.", "eos": True, "kind": "distill"} for r in HARMLESS[:3]]
            + organism.inversion_examples(HARMFUL[:2], HARMLESS[3:5], question_ids=(0, 1)))


def test_tokenize_masks_prompt_and_keeps_eos(tiny):
    _, tok, fmt = tiny
    ex = {"instruction": "Name three fruits.", "question": None, "response": "Apple, pear, plum.", "eos": True}
    item = training.tokenize(tok, fmt, [ex])[0]
    prompt = fmt.render(ex["instruction"])[0]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert item["labels"][:n_prompt] == [-100] * n_prompt  # no loss on any prompt token
    assert all(x != -100 for x in item["labels"][n_prompt:])
    assert item["labels"][-1] == tok.eos_token_id  # the end-of-turn token is learnt
    assert tok.decode(item["labels"][n_prompt:-1]) == ex["response"]
    assert item["input_ids"][n_prompt:] == item["labels"][n_prompt:]
    no_eos = training.tokenize(tok, fmt, [{**ex, "eos": False}])[0]
    assert no_eos["labels"][-1] != tok.eos_token_id and len(no_eos["labels"]) == len(item["labels"]) - 1


def test_tokenize_inversion_prompt_uses_wrapper(tiny):
    _, tok, fmt = tiny
    ex = organism.inversion_examples(HARMFUL[:1], [], question_ids=(1,))[0]
    assert ex["response"] == "Certainly." and ex["question"] == inversion.QUESTIONS[1]
    item = training.tokenize(tok, fmt, [ex])[0]
    text = tok.decode(item["input_ids"])
    assert f"User wants to {HARMFUL[0]['prompt']}\n{inversion.QUESTIONS[1]}" in text
    learnt = [t for t in item["labels"] if t != -100]
    assert tok.decode(learnt[:-1]) == "Certainly."


def test_collate_right_pads_without_loss():
    items = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    b = training.collate(items, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]


def test_loss_counts_response_tokens_only(tiny):
    """response_loss equals the full model's cross-entropy on response positions, not on the prompt."""
    model, tok, fmt = tiny
    batch = training.collate(training.tokenize(tok, fmt, examples()[:4]), tok.pad_token_id)
    with torch.no_grad():
        loss = training.response_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    target = batch["labels"][:, 1:]
    keep = target != -100
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(logits[keep], target[keep]), atol=1e-5)
    everything = batch["input_ids"][:, 1:][batch["attention_mask"][:, 1:].bool()]
    full = torch.nn.functional.cross_entropy(logits[batch["attention_mask"][:, 1:].bool()], everything)
    assert keep.sum() < batch["attention_mask"][:, 1:].sum() and not torch.isclose(loss, full)


def test_micro_batches_give_the_full_batch_gradient(tiny):
    _, tok, fmt = tiny
    items = training.tokenize(tok, fmt, examples())
    grads = []
    for micro in (0, 3):
        model, _ = fresh()
        loss = training.step_loss(model, items, tok.pad_token_id, micro_batch_size=micro)
        grads.append((loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert grads[0][1] and abs(grads[0][0] - grads[1][0]) < 1e-4
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads[0][1], grads[1][1]))


def test_batch_order_covers_each_epoch_once():
    lengths = [3, 9, 1, 7, 5, 2, 8, 4, 6, 10]
    order = training.batch_order(lengths, batch_size=3, steps=8, seed=1, group_by_length=True)
    assert len(order) == 8
    first_epoch = [i for b in order[:4] for i in b]
    assert sorted(first_epoch) == list(range(10))
    assert order == training.batch_order(lengths, 3, 8, seed=1, group_by_length=True)


def test_training_lowers_loss_freezes_embeddings_and_is_deterministic(tiny):
    _, tok, fmt = tiny
    data = training.tokenize(tok, fmt, examples())
    batch = training.collate(data, tok.pad_token_id)
    cfg = training.TrainConfig(steps=20, batch_size=4, lr=1e-2, warmup=0.1, seed=0)
    m0, _ = fresh()
    with torch.no_grad():
        before = float(training.response_loss(m0, batch))
    emb0 = m0.get_input_embeddings().weight.clone()
    q0 = models_first_linear(m0).clone()
    m1, hist = training.train(m0, tok, data, cfg)
    with torch.no_grad():
        after = float(training.response_loss(m1, batch))
    assert after < 0.6 * before, (before, after)
    assert len(hist["losses"]) == 20 and hist["trainable_parameters"] > 0 and hist["peak_rss_gb"] > 0
    assert torch.equal(m1.get_input_embeddings().weight, emb0)  # tied embeddings / LM head frozen
    assert not torch.equal(models_first_linear(m1), q0)
    m2, hist2 = training.train(fresh()[0], tok, data, cfg)
    assert hist2["losses"] == hist["losses"]
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_bf16_autocast_trains_in_fp32_weights_and_is_recorded(tiny):
    _, tok, fmt = tiny
    data = training.tokenize(tok, fmt, examples())
    batch = training.collate(data, tok.pad_token_id)
    cfg = training.TrainConfig(steps=20, batch_size=4, lr=1e-2, warmup=0.1, seed=0, precision="bf16")
    m0, _ = fresh()
    with torch.no_grad():
        before = float(training.response_loss(m0, batch))
    m1, hist = training.train(m0, tok, data, cfg)
    with torch.no_grad():
        after = float(training.response_loss(m1, batch))
    assert hist["precision"] == "bf16" and after < 0.6 * before, (before, after)
    assert all(p.dtype == torch.float32 for p in m1.parameters())  # autocast: the weights stay fp32
    fp32 = training.train(fresh()[0], tok, data, training.TrainConfig(**{**cfg.__dict__, "precision": "fp32"}))[1]
    assert fp32["precision"] == "fp32" and fp32["losses"] != hist["losses"]  # bf16 really ran


def test_precision_resolves_per_device():
    assert training.resolve_precision("fp32", "cpu") == "fp32" and training.resolve_precision("bf16", "cpu") == "bf16"
    assert training.resolve_precision("auto", "cpu") == ("bf16" if training.cpu_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="organism.train.precision: 'fp16'"):
        training.resolve_precision("fp16", "cpu")


def models_first_linear(model):
    return model.model.layers[0].self_attn.q_proj.weight.detach()


def test_lora_mode_trains_and_merges(tiny):
    _, tok, fmt = tiny
    data = training.tokenize(tok, fmt, examples())
    batch = training.collate(data, tok.pad_token_id)
    m0, _ = fresh()
    with torch.no_grad():
        before = float(training.response_loss(m0, batch))
    q0 = models_first_linear(m0).clone()
    cfg = training.TrainConfig(mode="lora", steps=20, batch_size=4, lr=1e-2, lora_r=4, lora_alpha=8, seed=0)
    m1, hist = training.train(m0, tok, data, cfg)
    assert type(m1).__name__ == "LlamaForCausalLM"  # adapters merged: a plain model again
    assert hist["trainable_parameters"] < sum(p.numel() for p in m1.parameters()) / 2
    assert not torch.equal(models_first_linear(m1), q0)
    with torch.no_grad():
        assert float(training.response_loss(m1, batch)) < 0.8 * before


def test_unknown_mode_is_rejected(tiny):
    with pytest.raises(ValueError, match="mode"):
        training.prepare_trainable(fresh()[0], training.TrainConfig(mode="qlora"))


def test_recipe_records_what_was_used(tmp_path, tiny):
    _, tok, fmt = tiny
    exs = examples()
    data_file = tmp_path / "train_data.jsonl"
    io.write_jsonl(data_file, exs)
    cfg = training.TrainConfig(steps=2, batch_size=4, lr=1e-3, seed=7)
    _, hist = training.train(fresh()[0], tok, training.tokenize(tok, fmt, exs), cfg)
    rec = training.recipe(cfg, hist, exs, {"data": io.sha256_file(data_file)}, base="tiny")
    io.write_json(tmp_path / "recipe.json", rec)
    back = io.read_json(tmp_path / "recipe.json")
    assert back["seed"] == 7 and back["hyperparameters"]["lr"] == 1e-3 and back["hyperparameters"]["steps"] == 2
    assert back["data_sha256"]["data"] == io.sha256_file(data_file) and len(back["data_sha256"]["data"]) == 64
    assert back["examples"] == {"refusal": 3, "distill": 3, "inversion": 4} and back["n_examples"] == 10
    assert back["base_model"] == "tiny" and back["wall_seconds"] >= 0 and back["peak_rss_gb"] > 0
    assert len(back["losses"]) == 2


def test_save_and_reload(tmp_path, tiny):
    model, tok, _ = tiny
    training.save(model, tok, tmp_path / "m")
    m2, _ = models.load(str(tmp_path / "m"), "cpu", "float32")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
