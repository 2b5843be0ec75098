"""Placement with accelerate: a model split over devices by an explicit device_map gives what one device gives.

On the CPU the map puts some decoder layers on "disk": the model then goes through accelerate's
dispatch (hf_device_map, per-module hooks that move weights and activations between places), the
path a multi-GPU or offloading node runs; hidden states, steering and generation must give exactly
what the model on one device gives.
"""

import pytest
import torch

from harmref import activations, generation, models, steering
from harmref.positions import ChatFormat

PROMPTS = ["Tell me how to bake bread.", "How do I pick a lock?", "Hi."]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    card = models.prepare("tiny-random:chatml", out)
    return out / "model.json", card


def split_map(n_layers: int) -> dict:
    dm = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(n_layers)})
    return dm


def test_explicit_device_map_matches_one_device(saved, tmp_path):
    card, _ = saved
    one, tok = models.load(card, "cpu", "float32")
    split, tok2 = models.load(card, "cpu", "float32", device_map=split_map(models.n_layers(one)),
                              offload_folder=tmp_path / "offload")
    assert set(split.hf_device_map.values()) == {"cpu", "disk"}
    assert getattr(split, "hf_device_map", None), "the explicit device_map did not go through accelerate"
    assert not getattr(one, "hf_device_map", None)
    assert models.input_device(split) == torch.device("cpu")
    fmt = ChatFormat.from_tokenizer(tok)
    h1, _, _ = activations.hidden_states(one, tok, fmt, PROMPTS)
    h2, _, _ = activations.hidden_states(split, tok2, fmt, PROMPTS)
    torch.testing.assert_close(h1, h2, atol=1e-6, rtol=0)
    assert generation.generate(one, tok, fmt, PROMPTS, 6) == generation.generate(split, tok2, fmt, PROMPTS, 6)
    v = h1[:, 2, 2].mean(0)
    steers = [steering.Steer.add(2, v, coeff=4.0)] * len(PROMPTS)
    a = steering.run_sweep(one, tok, fmt, PROMPTS, steers, max_new_tokens=6, keep_ids=True)
    b = steering.run_sweep(split, tok2, fmt, PROMPTS, steers, max_new_tokens=6, keep_ids=True)
    assert [r["token_ids"] for r in a] == [r["token_ids"] for r in b]


def test_device_map_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert models.resolve_device_map("auto", cpu) is None
    assert models.resolve_device_map("auto", cuda) == "auto"
    assert models.resolve_device_map("none", cuda) is None
    assert models.resolve_device_map({"model": 0}, cuda) == {"model": 0}
    with pytest.raises(models.ModelError, match="unknown device_map"):
        models.resolve_device_map("everywhere", cuda)
