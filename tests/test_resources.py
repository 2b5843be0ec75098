"""Resource requests from the model (harmref/resources.py): parameter counts, memory, where the config comes from."""

import json

import pytest

from harmref import models
from harmref import resources as hres

CLUSTER = {"gpu_tflops": 312, "efficiency": 0.05, "forward_efficiency": 0.4, "tokens_per_second": None,
           "load_gb_per_s": 1.0}
RT_GPU = {"device": "auto", "dtype": "auto", "batch_size": 32}


@pytest.mark.parametrize("arch", sorted(models.FAMILIES))
def test_parameter_count_matches_the_real_model(arch):
    """The formula against the built model of every family (biases and norms are the only difference)."""
    model, _ = models.tiny_random(models.FAMILIES[arch], n_layers=2, d_model=32, arch=arch)
    real = sum(p.numel() for p in model.parameters())
    cfg = model.config.to_dict()
    assert hres.n_params(cfg) == pytest.approx(real, rel=0.03)


def test_paper_models_have_their_published_sizes():
    sizes = {k: hres.n_params(v) / 1e9 for k, v in hres.KNOWN.items()}
    assert sizes["Qwen/Qwen2-7B-Instruct"] == pytest.approx(7.62, abs=0.01)
    assert sizes["meta-llama/Llama-2-7b-chat-hf"] == pytest.approx(6.74, abs=0.01)
    assert sizes["meta-llama/Meta-Llama-3-8B-Instruct"] == pytest.approx(8.03, abs=0.01)
    assert sizes["embedded"] == pytest.approx(0.135, abs=0.001)  # SmolLM2-135M


def test_memory_follows_parameters_dtype_and_batch():
    cfg = hres.KNOWN["Qwen/Qwen2-7B-Instruct"]
    size = hres.ModelSize("q", hres.n_params(cfg), cfg, "known")
    r32 = hres.request(size, RT_GPU, "infer", 32, 128)
    r8 = hres.request(size, RT_GPU, "infer", 8, 128)
    weights_mb = size.params * 2 / hres.MB
    assert r32.gpu_mem_mb > r8.gpu_mem_mb > weights_mb  # activations grow with the batch, on top of the weights
    assert r32.mem_mb == pytest.approx(hres.HOST_OVERHEAD_MB + 1.1 * weights_mb, abs=2)
    f32 = hres.request(size, {**RT_GPU, "dtype": "float32"}, "infer", 32, 128)
    assert f32.weights_mb == pytest.approx(2 * r32.weights_mb, abs=1)
    cpu = hres.request(size, {**RT_GPU, "device": "cpu"}, "infer", 32, 128)
    assert cpu.gpu_mem_mb == 0 and cpu.mem_mb > 4 * size.params / hres.MB  # float32, all in host memory
    full, lora = (hres.request(size, RT_GPU, "train", 16, train_mode=m).gpu_mem_mb for m in ("full", "lora"))
    assert full > 6 * size.params / hres.MB > lora  # AdamW's moments on every weight vs a few per cent
    assert hres.request(None, RT_GPU, "infer", 32).mem_mb == 32000  # unknown size: the fallback


def test_the_config_is_read_from_the_card_a_folder_or_the_cache_without_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants

    model, tok = models.tiny_random("chatml", n_layers=3)
    model.save_pretrained(tmp_path / "w")
    cfg, where = hres.read_config({"source": str(tmp_path / "w")})
    assert cfg["num_hidden_layers"] == 3 and where.endswith("config.json")
    (tmp_path / "card.json").write_text(json.dumps({"path": str(tmp_path / "w")}))
    assert hres.read_config({"source": "org/unknown"}, tmp_path / "card.json")[0]["num_hidden_layers"] == 3
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    snap = tmp_path / "hub/models--org--m/snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({**hres.KNOWN["tiny-random"], "num_hidden_layers": 7}))
    (tmp_path / "hub/models--org--m/refs").mkdir()
    (tmp_path / "hub/models--org--m/refs/main").write_text("ab" * 20)
    assert hres.read_config({"source": "org/m"})[0]["num_hidden_layers"] == 7  # from the cache
    cfg, where = hres.read_config({"source": "Qwen/Qwen2-7B-Instruct"})
    assert cfg["hidden_size"] == 3584 and "known shape" in where  # not downloaded: the known shape
    assert hres.read_config({"source": "org/absent"})[0] is None
    assert hres.read_config({"tune_from": "base"}, None, {"base": {"source": "embedded"}})[0]["hidden_size"] == 576


def test_gpu_time_estimate_is_tokens_over_the_stated_rate():
    cfg = hres.KNOWN["meta-llama/Meta-Llama-3-8B-Instruct"]
    size = hres.ModelSize("l", hres.n_params(cfg), cfg, "known")
    rate = hres.tokens_per_second(size, CLUSTER)
    assert rate == pytest.approx(312e12 * 0.05 / (2 * size.params))
    assert hres.tokens_per_second(size, {**CLUSTER, "tokens_per_second": 2000.0}) == 2000.0
    s = hres.gpu_seconds((0, 10 * round(rate)), size, CLUSTER)
    assert s == pytest.approx(10 + size.params * 2 / 1e9, rel=1e-3)  # 10 s of tokens + loading at 1 GB/s
    assert hres.runtime_minutes(60.0) == 15 and hres.runtime_minutes(600.0, attempt=2) == 60
    config = {"generation": {"max_new_tokens": 128}, "steering": {}, "guard": {"gcg": {}}}
    assert hres.job_tokens("generate", {"dataset": "x"}, config, lambda s: 10, 32) == (10 * hres.PROMPT_TOKENS, 1280)
    assert hres.job_tokens("unknown_rule", {}, config, lambda s: 10, 32) is None
