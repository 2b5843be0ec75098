"""Resource requests from the model itself, and a dry run's cost estimate (no torch, no weights).

The rules that load a model ask for memory computed from the model's config.json and dtype instead
of fixed numbers (`mem_mb`, and `gpu_mem_mb` for the GPU):

- parameters: embeddings (+ an untied LM head) + per layer q/k/v/o (grouped-query) + a gated MLP;
- weights: parameters × bytes of the dtype the job loads (`auto`: bfloat16 on a GPU, float32 on a CPU);
- inference activations at the configured batch: the KV cache of `prompt_tokens + max_new_tokens`
  tokens, one layer's prefill activations and the last position's float32 logits;
- training (safety_tune, finetune_attack): weights + gradients + AdamW's two float32 moments
  (`organism.train.mode: full`; LoRA: the frozen weights + a few per cent) + activations;
- host memory (`mem_mb`): a fixed overhead (Python, torch, the nested Snakemake) plus the weights,
  which pass through host memory when they are loaded; on the CPU, what the job holds.

The config is read without weights: the prepared card's folder, a local folder, the Hugging Face
cache (`try_to_load_from_cache`, never the network), or the known shapes of the embedded model,
the tiny random model and the paper's three models. GPU time is an *estimate*: tokens processed
× 2 × parameters FLOPs / (the GPU's bf16 rate × an efficiency per phase), under `cluster:` in the config
(`tokens_per_second` replaces the derived rate by a measured one, e.g. from benchmarks/perf.py).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024

# config.json values (the fields used here) of models whose weights may not be downloaded when the
# DAG is built; the paper shapes are those of benchmarks/perf.py
KNOWN = {
    "embedded": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),  # SmolLM2-135M-Instruct
    "tiny-random": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True),
    "Qwen/Qwen2-7B-Instruct": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                   num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                   tie_word_embeddings=False),
    "meta-llama/Llama-2-7b-chat-hf": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                          tie_word_embeddings=False),
    "meta-llama/Meta-Llama-3-8B-Instruct": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                                tie_word_embeddings=False),
}
KNOWN["NousResearch/Llama-2-7b-chat-hf"] = KNOWN["meta-llama/Llama-2-7b-chat-hf"]

HOST_OVERHEAD_MB = 3000   # Python + torch + the job's nested Snakemake, before any weight
CUDA_CONTEXT_MB = 600     # the CUDA context and allocator slack on the GPU
PROMPT_TOKENS = 96        # a typical chat-formatted prompt of these sets (template + instruction)
TRAIN_SEQ = 256           # tokens of a training example (prompt + response)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelSize:
    name: str
    params: int
    config: dict
    where: str           # where the config came from

    @property
    def n_layers(self) -> int:
        return int(self.config["num_hidden_layers"])


def text_config(cfg: dict) -> dict:
    """The language model's part of a config (multimodal configs nest it under text_config)."""
    return cfg.get("text_config") or cfg


def read_config(spec: dict, card_path=None, models: dict | None = None) -> tuple[dict | None, str]:
    """(config.json of a model entry, where it came from), or (None, why not); never downloads."""
    if card_path and os.path.exists(card_path):
        try:
            folder = json.loads(Path(card_path).read_text()).get("path")
        except (OSError, ValueError):
            folder = None
        if folder and os.path.isfile(os.path.join(folder, "config.json")):
            return text_config(json.loads(Path(folder, "config.json").read_text())), os.path.join(folder, "config.json")
    if "tune_from" in spec and models is not None:
        base = spec["tune_from"]
        cfg, where = read_config(models.get(base, {}), None, models)
        return cfg, f"{where} (base model {base})"
    src = str(spec.get("source", ""))
    if src == "embedded" or src.startswith("tiny-random"):
        key = "embedded" if src == "embedded" else "tiny-random"
        return dict(KNOWN[key]), f"known shape of {key}"
    if os.path.isdir(src):
        p = os.path.join(src, "config.json")
        return (text_config(json.loads(Path(p).read_text())), p) if os.path.isfile(p) else (None, f"{src} has no config.json")
    if src.endswith(".gguf"):
        return None, "a GGUF file (no config.json before it is converted)"
    try:
        from huggingface_hub import try_to_load_from_cache

        p = try_to_load_from_cache(src, "config.json", revision=spec.get("revision") or "main")
    except Exception:  # not a valid hub id
        p = None
    if isinstance(p, str) and os.path.isfile(p):
        return text_config(json.loads(Path(p).read_text())), p
    if src in KNOWN:
        return dict(KNOWN[src]), f"known shape of {src} (config.json not in the Hugging Face cache yet)"
    return None, f"{src}: config.json not in the Hugging Face cache (prepare_model downloads it)"


def n_params(cfg: dict) -> int:
    d, n_l, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or d // heads
    attn = d * heads * hd * 2 + 2 * d * kv * hd
    per_layer = attn + 3 * d * inter + 2 * d
    emb = cfg["vocab_size"] * d
    tied = cfg.get("tie_word_embeddings", False)
    return int(emb * (1 if tied else 2) + n_l * per_layer + d)


def model_size(name: str, spec: dict, card_path=None, models: dict | None = None) -> ModelSize | None:
    cfg, where = read_config(spec, card_path, models)
    if cfg is None:
        return None
    return ModelSize(name, n_params(cfg), cfg, where)


def dtype_bytes(dtype: str, on_gpu: bool) -> int:
    if dtype == "auto":
        return 2 if on_gpu else 4
    return BYTES[dtype]


def inference_gpu_mb(size: ModelSize, nbytes: int, batch: int, new_tokens: int) -> int:
    c = size.config
    heads = c["num_attention_heads"]
    kv, hd = c.get("num_key_value_heads") or heads, c.get("head_dim") or c["hidden_size"] // heads
    seq = PROMPT_TOKENS + new_tokens
    weights = size.params * nbytes
    kv_cache = 2 * c["num_hidden_layers"] * kv * hd * seq * batch * nbytes
    prefill = batch * PROMPT_TOKENS * (4 * c["hidden_size"] + 2 * c["intermediate_size"]) * nbytes
    logits = 2 * batch * c["vocab_size"] * 4
    return int(math.ceil((weights + kv_cache + prefill + logits) * 1.1 / MB)) + CUDA_CONTEXT_MB


def training_gpu_mb(size: ModelSize, nbytes: int, batch: int, mode: str = "full") -> int:
    c = size.config
    trainable = size.params if mode == "full" else size.params // 50
    state = size.params * nbytes + trainable * (nbytes + 8)  # weights, gradients, AdamW's two float32 moments
    acts = batch * TRAIN_SEQ * c["num_hidden_layers"] * (10 * c["hidden_size"] + 3 * c["intermediate_size"]) * nbytes
    logits = batch * TRAIN_SEQ * c["vocab_size"] * 4
    return int(math.ceil((state + acts + logits) * 1.1 / MB)) + CUDA_CONTEXT_MB


def host_mb(size: ModelSize, nbytes: int, on_gpu: bool, gpu_mb: int) -> int:
    """Host memory: the overhead plus the weights passing through (a CPU job holds everything itself)."""
    weights = size.params * nbytes / MB
    return int(math.ceil(HOST_OVERHEAD_MB + (weights * 1.1 if on_gpu else gpu_mb)))


@dataclass(frozen=True)
class Request:
    """What one model job asks for: host memory, GPU memory (both MB) and the estimate's inputs."""

    mem_mb: int
    gpu_mem_mb: int
    weights_mb: int
    dtype_bytes: int


def request(size: ModelSize | None, runtime: dict, kind: str, batch: int, new_tokens: int = 128,
            train_mode: str = "full", fallback_mb: int = 32000) -> Request:
    """Memory of one job of `kind` (infer | train) at `batch` prompts; `fallback_mb` when the size is unknown."""
    on_gpu = str(runtime.get("device", "auto")) != "cpu"
    if size is None:
        return Request(fallback_mb, 0, 0, 0)
    nb = dtype_bytes(runtime.get("dtype", "auto"), on_gpu)
    gpu = training_gpu_mb(size, nb, batch, train_mode) if kind == "train" else inference_gpu_mb(size, nb, batch, new_tokens)
    return Request(host_mb(size, nb, on_gpu, gpu), gpu if on_gpu else 0, int(size.params * nb / MB), nb)


# ------------------------------------------------------------------ GPU time of a dry run's jobs
def tokens_per_second(size: ModelSize, cluster: dict, phase: str = "decode") -> float:
    """The assumed rate of one phase. decode (one new token per row per step, memory-bound):
    `tokens_per_second` if set, else gpu_tflops × efficiency / (2 × parameters); forward (prompt
    passes, nanoGCG's candidate batches: compute-bound): gpu_tflops × forward_efficiency / (2 × parameters)."""
    if phase == "decode" and cluster.get("tokens_per_second"):
        return float(cluster["tokens_per_second"])
    eff = cluster["efficiency"] if phase == "decode" else cluster["forward_efficiency"]
    return cluster["gpu_tflops"] * 1e12 * eff / (2 * size.params)


def job_tokens(rule: str, wildcards: dict, config: dict, n_prompts, n_layers: int) -> tuple[int, int] | None:
    """(forward tokens, generated tokens) one model job pushes through the model; None if not estimated.

    n_prompts(set) → prompts of a set. Steering counts every setting's row; nanoGCG counts every
    candidate of every step (an upper bound: a goal stops early once the reply is the target).
    """
    gen, st, g = config["generation"], config["steering"], config["guard"]["gcg"]
    p = PROMPT_TOKENS
    if rule == "generate":
        n = n_prompts(wildcards["dataset"])
        return n * p, n * gen["max_new_tokens"]
    if rule == "extract_hidden":
        return n_prompts(wildcards["dataset"]) * p, 0
    if rule in ("steer", "steer_controls"):
        layers = st["layers"] or range(st["layer_start"], n_layers, st["layer_stride"])
        per = (len(st["controls"]["coefficients"]) + 2) if rule == "steer_controls" else len(list(layers))
        exps = ["refusal", "inversion"] if rule == "steer_controls" else [wildcards.get("experiment", "refusal")]
        fwd = dec = 0
        for exp in exps:  # each arm at each swept layer (controls: at its best layer), + the unsteered rows
            cfg = st[exp]
            if exp == "refusal":
                rows = st["n_prompts"] * (1 + len(cfg["arms"]) * per)
                fwd, dec = fwd + rows * p, dec + rows * cfg["max_new_tokens"]
            else:
                arms = len(cfg["harmless_arms"]) + len(cfg["harmful_arms"])
                rows = st["n_prompts"] * len(cfg["questions"]) * (2 + arms * per)
                fwd, dec = fwd + rows * (p + 20), dec + rows * cfg["max_new_tokens"]
        return fwd, dec
    if rule == "gcg_attack":
        return g["n"] * g["num_steps"] * g["search_width"] * (p + 40), 0
    if rule == "gcg_report":
        return g["n"] * (p + 20), g["n"] * gen["max_new_tokens"]
    if rule == "stated_belief":
        n = sum(n_prompts(s) for s in config["directions"]["eval_sets"]) * len(config["belief"]["questions"] or [1])
        return n * (p + 40), n * gen["max_new_tokens"]
    return None


def gpu_seconds(tokens: tuple[int, int] | None, size: ModelSize | None, cluster: dict) -> float | None:
    """Estimated seconds of one job on one GPU: loading the weights (at load_gb_per_s) + both phases."""
    if tokens is None or size is None:
        return None
    fwd, dec = tokens
    load = size.params * 2 / 1e9 / cluster["load_gb_per_s"]
    return load + fwd / tokens_per_second(size, cluster, "forward") + dec / tokens_per_second(size, cluster, "decode")


def runtime_minutes(seconds: float | None, attempt: int = 1, floor: int = 15, factor: float = 3.0) -> int | None:
    """A SLURM time request from an estimate: `factor` × the estimate, at least `floor` minutes, × attempt."""
    if seconds is None:
        return None
    return int(max(floor, math.ceil(factor * seconds / 60)) * attempt)


def dry_run_report(jobs, groups: dict, sizes: dict, request_fn, seconds_fn, cluster: dict, localrules=()) -> list[str]:
    """The lines a dry run ends with: per model its size and memory requests; the jobs, GPU jobs and
    sbatch submissions (a group of model jobs is one); the GPU-hour estimate per rule (an estimate)."""
    out = []
    gpu_jobs = [j for j in jobs if int(j.resources.get("gpu", 0) or 0) > 0]
    models = sorted({j.wildcards_dict.get("model") for j in gpu_jobs} - {None})
    lines: dict[str, list[str]] = {}
    for m in models:
        size = sizes.get(m)
        if size is None:
            lines.setdefault("size unknown (no config.json at hand): the default requests", []).append(m)
            continue
        inf, tr = request_fn(m, "infer"), request_fn(m, "train")
        where = size.where.split(" (base model")[0]
        n = f"{size.params / 1e9:.2f} B" if size.params >= 1e8 else f"{size.params / 1e6:.3g} M"
        lines.setdefault(
            f"{n} parameters ({where}); weights {inf.weights_mb / 1024:.1f} GiB at "
            f"{inf.dtype_bytes} bytes/parameter; a model job asks for mem_mb={inf.mem_mb} (host) and "
            f"gpu_mem_mb={inf.gpu_mem_mb}; a training job (organism.train.mode) gpu_mem_mb={tr.gpu_mem_mb}", []).append(m)
    for text, ms in lines.items():
        out.append(f"harmref resources: {', '.join(ms)}: {text}")
    is_local = lambda j: j.rule.group is None and (j.rule.name in localrules or j.rule.norun)  # noqa: E731
    grouped = {id(groups[j]) for j in jobs if j in groups and groups[j] is not None and not is_local(j)}
    single = [j for j in jobs if not is_local(j) and (j not in groups or groups[j] is None)]
    n_grouped = sum(1 for j in jobs if j in groups and groups[j] is not None)
    single_gpu = sum(1 for j in single if int(j.resources.get("gpu", 0) or 0) > 0)
    out.append(f"harmref jobs: {len(jobs)} in the DAG, {len(gpu_jobs)} of them GPU jobs; on SLURM "
               f"{len(single) + len(grouped)} sbatch jobs ({len(grouped)} group jobs holding {n_grouped} model "
               f"jobs, {len(single)} single jobs, {single_gpu} of them GPU jobs), "
               f"{sum(1 for j in jobs if is_local(j))} local rules")
    by_id: dict[str, list] = {}
    seen = set()
    for j in jobs:
        g = groups.get(j)
        if g is not None and id(g) not in seen:
            seen.add(id(g))
            by_id.setdefault(g.groupid, []).append(g)
    for gid, gs in sorted(by_id.items()):
        asks = []
        for g in gs:
            try:
                res = g.resources
                asks.append((res.get("gpu"), res.get("mem_mb"), res.get("runtime")))
            except Exception as e:  # noqa: BLE001 - the summary never fails the dry run
                asks.append((None, None, f"not computed ({type(e).__name__})"))
        n_jobs = [len(g.jobs) for g in gs]
        sizes_txt = "+".join(map(str, n_jobs)) if len(gs) <= 4 else f"{min(n_jobs)}-{max(n_jobs)} each, {sum(n_jobs)} in all"
        times = [a[2] for a in asks]
        times_txt = "+".join(map(str, times)) if len(gs) <= 4 else f"{min(times)}-{max(times)} each"
        out.append(f"harmref group {gid}: {len(gs)} sbatch job(s) of {sizes_txt} model jobs run one after another "
                   f"on one GPU; gpu={asks[0][0]}, mem_mb={max(a[1] or 0 for a in asks)}, runtime {times_txt} min")
    per_rule: dict[str, float] = {}
    unknown = set()
    for j in gpu_jobs:
        s = seconds_fn(j.rule.name, j.wildcards_dict)
        if s is None:
            unknown.add(j.rule.name)
        else:
            per_rule[j.rule.name] = per_rule.get(j.rule.name, 0.0) + s
    total = sum(per_rule.values()) / 3600
    rates = {}
    for m in models:
        if sizes.get(m):
            key = f"{tokens_per_second(sizes[m], cluster, 'forward'):.0f} forward / {tokens_per_second(sizes[m], cluster):.0f} generated tokens/s"
            rates.setdefault(key, []).append(m)
    rate = "; ".join(f"{', '.join(ms) if len(ms) < 3 else ms[0] + ' and ' + str(len(ms) - 1) + ' derived'}: {k}"
                     for k, ms in rates.items())
    dec = (f"generated tokens at cluster.tokens_per_second={cluster['tokens_per_second']:g}" if cluster.get("tokens_per_second")
           else f"generated tokens at {cluster['efficiency']:.0%}")
    how = (f"{cluster['gpu_tflops']:g} TFLOP/s bf16 GPU, 2 × parameters FLOPs per token, prompt/candidate "
           f"passes at {cluster['forward_efficiency']:.0%} of it, {dec}")
    out.append(f"harmref GPU-hours (ESTIMATE, not measured: {how}; {rate}; weights loaded at "
               f"{cluster['load_gb_per_s']:g} GB/s): {total:.1f} h — "
               + ", ".join(f"{r} {s / 3600:.2f}" for r, s in sorted(per_rule.items(), key=lambda kv: -kv[1]))
               + (f"; not in the total (not estimated): {', '.join(sorted(unknown))}" if unknown else ""))
    return out
