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


def _cache_snapshot(cache, repo_id, sha, seed=1, ref="main"):
    """A snapshot in a Hugging Face cache, in the layout huggingface_hub writes (refs/<ref> -> sha)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / sha
    model, tok = models.tiny_random("chatml", seed=seed)
    model.save_pretrained(snap)
    tok.save_pretrained(snap)
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with an empty Hugging Face cache under tmp_path: nothing reaches the network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_a_hub_id_resolves_once_to_a_pinned_snapshot_that_later_jobs_load_offline(tmp_path, offline_cache):
    snap = _cache_snapshot(offline_cache, "org/cached", "ab" * 20)
    card = models.prepare("org/cached", tmp_path / "c1")
    assert card["kind"] == "hub" and card["source"] == "org/cached"
    assert card["revision"] == "main" and card["commit_sha"] == "ab" * 20 and card["path"] == str(snap)
    assert card["weights_hashed"] is True
    assert card["weights_sha256"]["model.safetensors"] == io.sha256_file(snap / "model.safetensors")
    model, tok = models.load(tmp_path / "c1/model.json", device="cpu")  # the snapshot folder, local files only
    assert model.config.hidden_size == 32 and tok.padding_side == "left"
    # a pinned commit is that snapshot, whatever main points at
    other = _cache_snapshot(offline_cache, "org/cached", "cd" * 20, seed=2, ref=None)
    pinned = models.prepare("org/cached", tmp_path / "c2", revision="cd" * 20)
    assert pinned["revision"] == pinned["commit_sha"] == "cd" * 20 and pinned["path"] == str(other)
    assert pinned["identity"] != card["identity"]
    # the snapshot removed from the cache: the job says to prepare the model again
    import shutil

    shutil.rmtree(snap)
    with pytest.raises(models.ModelError, match=r"is gone from the Hugging Face cache; rerun prepare_model"):
        models.load(tmp_path / "c1/model.json", device="cpu")


def test_prepare_asks_the_hub_for_safetensors_configs_and_tokenizer_only(tmp_path, monkeypatch):
    import huggingface_hub

    snap = _cache_snapshot(tmp_path / "hub", "org/m", "ef" * 20)
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append((repo, kw)) or str(snap))
    card = models.prepare("org/m", tmp_path / "card", revision="v1.0")
    (repo, kw), = calls
    assert repo == "org/m" and kw["revision"] == "v1.0"
    assert "*.safetensors" in kw["allow_patterns"] and "*.json" in kw["allow_patterns"]
    assert not any(p.endswith((".bin", ".pt", ".pth")) for p in kw["allow_patterns"])
    assert card["revision"] == "v1.0" and card["commit_sha"] == "ef" * 20
    (snap / "model.safetensors").unlink()  # a repository with pickled weights only
    (snap / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(models.ModelError, match=r"org/m \(revision v1.0\): the snapshot .* has no \*.safetensors"):
        models.prepare("org/m", tmp_path / "card2", revision="v1.0")


def test_an_empty_cache_offline_fails_in_seconds_saying_how_to_download(tmp_path, offline_cache):
    import time

    t0 = time.time()
    with pytest.raises(models.ModelError) as e:
        models.prepare("meta-llama/Meta-Llama-3-8B-Instruct", tmp_path / "card")
    assert time.time() - t0 < 10
    msg = str(e.value)
    assert "model meta-llama/Meta-Llama-3-8B-Instruct (revision main): HF_HUB_OFFLINE=1 is set" in msg
    assert str(offline_cache) in msg and "`hf download meta-llama/Meta-Llama-3-8B-Instruct --revision main`" in msg
    assert not (tmp_path / "card/model.json").exists()


def _hub_error(cls, status):
    import httpx2

    url = "https://huggingface.co/api/models/org/m/revision/main"
    return cls(f"{status} error", response=httpx2.Response(status, request=httpx2.Request("GET", url)))


@pytest.mark.parametrize("error, expected", [
    ("gated", r"org/m \(revision main\) is gated: accept its licence on https://huggingface.co/org/m .* "
              r"HF_TOKEN=<token> or run `hf auth login`"),
    ("missing", r"org/m \(revision main\): no such repository on the hub .* a private repository also needs a token"),
    ("revision", r"org/m \(revision main\): no revision 'main' on the hub; set models.<name>.revision"),
    ("network", r"org/m \(revision main\): the hub cannot be reached and the Hugging Face cache .* "
                r"`hf download org/m --revision main`, then set HF_HUB_OFFLINE=1"),
])
def test_hub_failures_name_the_model_and_what_to_do(tmp_path, monkeypatch, error, expected):
    import huggingface_hub
    from huggingface_hub import errors

    exc = {"gated": lambda: _hub_error(errors.GatedRepoError, 401),
           "missing": lambda: _hub_error(errors.RepositoryNotFoundError, 404),
           "revision": lambda: _hub_error(errors.RevisionNotFoundError, 404),
           "network": lambda: errors.LocalEntryNotFoundError("An error happened while trying to locate the files")}[error]

    def fail(repo_id, **kw):
        raise exc()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(models.ModelError, match=expected):
        models.prepare("org/m", tmp_path / "card")
    assert not (tmp_path / "card/model.json").exists()


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
