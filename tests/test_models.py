"""Model cards record what the weights are: sha256 of every weight/config/tokenizer file and one identity."""

import json

import pytest

from harmref import io, models


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    d = tmp_path_factory.mktemp("cards")
    return d, {name: models.prepare("tiny-random:chatml", d / name, seed=seed)
               for name, seed in (("a", 3), ("b", 3), ("c", 4))}


def test_card_records_the_sha256_of_each_weight_file_and_an_identity(cards):
    d, c = cards
    a = c["a"]
    assert a["weights_hashed"] is True
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(a["weights_sha256"])
    assert "model.json" not in a["weights_sha256"]
    for name, digest in a["weights_sha256"].items():
        assert io.sha256_file(d / "a" / name) == digest
    assert json.loads((d / "a/model.json").read_text()) == a  # what the card file holds
    assert len(a["identity"]) == 64 and int(a["identity"], 16) >= 0


def test_identity_follows_the_weights_not_the_folder(cards):
    d, c = cards
    assert c["a"]["identity"] == c["b"]["identity"]  # same seed, other folder: same weights
    assert c["a"]["identity"] != c["c"]["identity"]  # other seed: other weights
    assert c["a"]["weights_sha256"]["model.safetensors"] != c["c"]["weights_sha256"]["model.safetensors"]
    ident = c["a"]["identity"]
    assert models.card_identity(c["a"]) == models.card_identity(d / "a/model.json") == models.card_identity(d / "a") == ident


def test_a_local_folder_changed_in_place_gets_another_identity(tmp_path):
    model, tok = models.tiny_random("chatml", seed=0)
    src = tmp_path / "weights"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    (src / "README.md").write_text("notes")
    first = models.prepare(str(src), tmp_path / "card")
    assert first["kind"] == "dir" and "README.md" not in first["weights_sha256"]
    (src / "README.md").write_text("other notes")  # not part of the weights
    assert models.prepare(str(src), tmp_path / "card")["identity"] == first["identity"]
    tok.chat_template = tok.chat_template.replace("helpful", "careful")  # the template decides the prompt
    tok.save_pretrained(src)
    second = models.prepare(str(src), tmp_path / "card")
    assert second["identity"] != first["identity"]
    with torch_no_grad():
        next(model.parameters()).add_(1e-3)
    model.save_pretrained(src)
    third = models.prepare(str(src), tmp_path / "card")
    assert third["weights_sha256"]["model.safetensors"] != second["weights_sha256"]["model.safetensors"]
    assert len({first["identity"], second["identity"], third["identity"]}) == 3


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_hub_id_not_downloaded_says_so_and_a_cached_snapshot_is_hashed(tmp_path, monkeypatch, caplog):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    card = models.prepare("org/not-downloaded", tmp_path / "c1")
    assert card["weights_hashed"] is False and card["weights_sha256"] == {}
    assert "not downloaded" in card["identity_note"] and "not in the local Hugging Face cache" in caplog.text
    assert models.prepare("org/other", tmp_path / "c2")["identity"] != card["identity"]
    # a snapshot in the local cache (the layout huggingface_hub writes) is hashed without any download
    repo = tmp_path / "hub/models--org--cached"
    snap = repo / "snapshots" / ("ab" * 20)
    model, tok = models.tiny_random("chatml", seed=1)
    model.save_pretrained(snap)
    tok.save_pretrained(snap)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("ab" * 20)
    cached = models.prepare("org/cached", tmp_path / "c3")
    assert cached["weights_hashed"] is True and cached["weights_folder"] == str(snap)
    assert cached["weights_sha256"]["model.safetensors"] == io.sha256_file(snap / "model.safetensors")


def test_tuned_card_identity_covers_weights_recipe_and_base(cards, tmp_path):
    d, c = cards
    recipe = {"base_model": "tiny", "hyperparameters": {"steps": 4, "lr": 1e-3}, "seed": 0,
              "data_sha256": {"data": "0" * 64}, "system_prompt": None, "wall_seconds": 1.0}
    t = models.tuned_card(d / "a", "tiny", c["b"], recipe, tmp_path / "recipe.json")
    assert t["kind"] == "tuned" and t["base_identity"] == c["b"]["identity"]
    assert t["weights_sha256"] == c["a"]["weights_sha256"] and t["identity"] != c["a"]["identity"]
    same = models.tuned_card(d / "a", "tiny", c["b"], {**recipe, "wall_seconds": 9.0}, tmp_path / "r.json")
    assert same["identity"] == t["identity"]  # a measurement is not part of the recipe
    steps = {**recipe, "hyperparameters": {"steps": 2, "lr": 1e-3}}
    data = {**recipe, "data_sha256": {"data": "1" * 64}}
    others = [models.tuned_card(d / "a", "tiny", c["b"], r, tmp_path / "r.json")["identity"] for r in (steps, data)]
    others.append(models.tuned_card(d / "a", "tiny", c["c"], recipe, tmp_path / "r.json")["identity"])  # other base
    others.append(models.tuned_card(d / "c", "tiny", c["b"], recipe, tmp_path / "r.json")["identity"])  # other weights
    assert len({t["identity"], *others}) == 5


def test_a_card_without_identity_or_weights_is_a_clear_error(tmp_path):
    io.write_json(tmp_path / "old/model.json", {"source": None, "kind": "tuned", "path": str(tmp_path)})
    with pytest.raises(models.ModelError, match=r"old/model.json: no weights identity .* --forcerun safety_tune"):
        models.card_identity(tmp_path / "old/model.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/config.json").write_text("{}")
    with pytest.raises(models.ModelError, match=r"empty: no weight files"):
        models.prepare(str(tmp_path / "empty"), tmp_path / "card")
    with pytest.raises(models.ModelError, match=r"model source /no/such/dir: no such folder"):
        models.prepare("/no/such/dir", tmp_path / "card2")
