"""Benchmark: harmref's model-side costs, each measured side by side with its limit in one run.

Extraction (the same prompts, batches and positions in every mode):
  harmref    harmref.activations.hidden_states: the decoder stack with capture hooks on every layer,
             no LM head (what rule extract_hidden runs);
  body       a bare forward of the decoder stack on the same batches, no hooks, no LM head (the limit);
  causal_lm  the same capture hooks around the whole CausalLM forward (vocab logits computed and
             dropped: what harmref did before), also the reference for the outputs (max abs diff);
  batch1     the official code's shape: one prompt per forward, whole CausalLM (timed on a subset
             of `--batch1-prompts` prompts and scaled to all of them).
Latent Guard: Δharmful / Δrefuse of every extracted prompt from its hidden states (the scoring that
  follows extraction), as a share of the extraction time.
Steering (with --sweep; benchmarks/steering_sweep.py's modes): one batched sweep over every layer vs one
  generate call per layer vs one unsteered generation of the same rows.

Modes are interleaved over `--repeats` rounds (CPU contention spreads over all of them) and the
median is reported. Run it with nothing else on the machine.

    .venv/bin/python benchmarks/perf.py --threads 2                      # embedded SmolLM2, CPU
    .venv/bin/python benchmarks/perf.py --model-config qwen2-7b --device cuda   # paper scale, random weights

With `--model-config NAME|config.json` the model is built with random weights from a Hugging Face
config (no download; NAME is one of the paper's shapes: llama2-7b, llama3-8b, qwen2-7b) in bfloat16 on
`--device`, prompts are random token ids of the embedded run's lengths, and the report adds the
fraction of the device's measured bf16 matmul rate reached (≈ 2 × decoder parameters × tokens
FLOPs per forward, embeddings and LM head excluded). `--layers N` keeps the first N decoder layers (a CPU smoke test of the GPU mode).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "andyrdt_refusal_direction" / "dataset" / "splits"

# the decoder shapes of the paper's three models (their config.json values; weights are random here)
PAPER_SHAPES = {
    "llama2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                      rms_norm_eps=1e-5),
    "llama3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=500000.0),
    "qwen2-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                     rms_norm_eps=1e-6, rope_theta=1000000.0),
}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def random_model(name: str, device: str, layers: int | None):
    """A causal LM with random weights from a paper shape or a config.json, bfloat16 (float32 on CPU)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name in PAPER_SHAPES:
        spec = dict(PAPER_SHAPES[name])
        cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
    else:
        cfg = AutoConfig.from_pretrained(name)  # a local config.json or directory
    if layers:
        cfg.num_hidden_layers = layers
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


class IdBatch:
    """The `EncodedBatch` interface for prompts given as token ids (left-padded; GPU mode)."""

    def __init__(self, rows: list[list[int]], pad: int = 0):
        from harmref.positions import EncodedBatch

        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, r in enumerate(rows):
            ids[b, width - len(r):] = torch.tensor(r)
            mask[b, width - len(r):] = 1
        start = torch.tensor([width - len(r) for r in rows])
        inst = torch.full((len(rows),), width - 5)  # 4 post-instruction tokens, as ChatML/Llama-2
        self.batch = EncodedBatch(ids, mask, inst, inst + 1, start)


def matmul_rate(device: str, dtype, n: int = 4096, reps: int = 20) -> float:
    """Measured dense matmul rate (FLOP/s) of the device at `dtype`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=192, help="prompts extracted (harmful + harmless train, alternating)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batch1-prompts", type=int, default=32, help="prompts timed in the batch-size-1 mode (scaled up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-config", default=None, help="random weights from a paper shape or config.json (GPU mode)")
    ap.add_argument("--layers", type=int, default=None, help="with --model-config: keep the first N decoder layers")
    ap.add_argument("--sweep", action="store_true", help="also run the steering sweep modes (embedded model only)")
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from harmref import activations, io, latent_guard, models, positions
    from harmref.hooks import add_hooks, decoder_layers

    harmful = [r["instruction"] for r in io.read_records(DATA / "harmful_train.json")]
    harmless = [r["instruction"] for r in io.read_records(DATA / "harmless_train.json")]
    texts = [x for pair in zip(harmful, harmless) for x in pair][: args.prompts]
    tmp = tempfile.TemporaryDirectory()
    if args.model_config:
        model = random_model(args.model_config, args.device, args.layers)
        # the embedded model's tokenizer only supplies realistic prompt lengths
        _, tok = models.load(models.prepare("embedded", Path(tmp.name) / "smollm2")["path"], "cpu", "float32")
        fmt = positions.ChatFormat.from_tokenizer(tok)
        gen = torch.Generator().manual_seed(0)
        lengths = [positions.encode(tok, fmt, [t]).input_ids.shape[1] for t in texts]
        vocab = model.config.vocab_size
        id_rows = [torch.randint(1, vocab, (n,), generator=gen).tolist() for n in lengths]
        order = sorted(range(len(id_rows)), key=lambda i: len(id_rows[i]))
        batches = [IdBatch([id_rows[i] for i in order[s:s + args.batch_size]]).batch
                   for s in range(0, len(order), args.batch_size)]
        label = f"{args.model_config} (random weights{f', {args.layers} layers' if args.layers else ''})"
    else:
        model, tok = models.load(models.prepare("embedded", Path(tmp.name) / "smollm2")["path"], args.device, "float32")
        fmt = positions.ChatFormat.from_tokenizer(tok)
        order = activations.sort_by_length([len(fmt.render(x)[0]) for x in texts])
        batches = [positions.encode(tok, fmt, [texts[i] for i in order[s:s + args.batch_size]])
                   for s in range(0, len(order), args.batch_size)]
        label = "SmolLM2-135M-Instruct (embedded)"
    dev = torch.device(args.device)
    n_post = int(batches[0].n_post[0])
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    n_layers = len(decoder_layers(model))
    body = activations.body(model)
    cols = [positions.capture_columns(b, 2, n_post) for b in batches]

    @torch.no_grad()
    def m_harmref():
        return torch.cat([activations.capture(model, b, c) for b, c in zip(batches, cols)])

    @torch.no_grad()
    def m_body():
        for b in batches:
            b = b.to(dev)
            body(**b.model_inputs(), use_cache=False)
        sync(dev)

    @torch.no_grad()
    def m_causal_lm():
        out = []
        for b, c in zip(batches, cols):
            store = [None] * (n_layers + 1)
            b = b.to(dev)
            c = c.to(dev)
            idx = torch.arange(c.shape[0], device=dev)[:, None]

            def grab(k):
                def fn(h):
                    store[k] = h[idx, c].float().cpu()
                return fn

            with add_hooks(model, [("resid_pre", l, grab(l)) for l in range(n_layers)] + [("resid_post", n_layers - 1, grab(n_layers))]):
                model(**b.model_inputs(), use_cache=False)
            out.append(torch.stack(store, dim=1))
        return torch.cat(out)

    singles = [(b.input_ids[j:j + 1, int(b.start[j]):], b.attention_mask[j:j + 1, int(b.start[j]):])
               for b in batches for j in range(len(b.input_ids))][: args.batch1_prompts]
    batch1_scale = sum(int(b.attention_mask.sum()) for b in batches) / sum(int(m.sum()) for _, m in singles)

    @torch.no_grad()
    def m_batch1():
        for ids, mask in singles:
            model(input_ids=ids.to(dev), attention_mask=mask.to(dev), output_hidden_states=True, use_cache=False)
        sync(dev)

    hidden = m_harmref()
    cents = {k: hidden[i::4].double().mean(0).float() for i, k in
             enumerate(("mu_harmful", "mu_harmless", "mu_refused", "mu_accepted"))}
    inst = 2

    def m_guard():
        return latent_guard.score_hidden(hidden, cents, inst=inst, post=hidden.shape[2] - 1)

    modes = [("harmref", m_harmref), ("body", m_body), ("causal_lm", m_causal_lm), ("batch1", m_batch1), ("guard_scoring", m_guard)]
    times = {name: [] for name, _ in modes}
    outs = {}
    m_body()  # warm-up
    for _ in range(args.repeats):
        for name, fn in modes:
            t0 = time.perf_counter()
            outs[name] = fn()
            sync(dev)
            dt = time.perf_counter() - t0
            times[name].append(dt * batch1_scale if name == "batch1" else dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens / med[k] for k in ("harmref", "body", "causal_lm", "batch1")}
    result = {
        "model": label, "device": str(dev), "threads": args.threads, "dtype": str(next(model.parameters()).dtype),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "prompts": len(texts), "tokens": tokens, "batch_size": args.batch_size, "layers": n_layers,
        "seconds": times, "median_s": med, "tokens_per_s": tps,
        "harmref_vs_body": tps["harmref"] / tps["body"],
        "harmref_vs_causal_lm": tps["harmref"] / tps["causal_lm"],
        "harmref_vs_batch1": tps["harmref"] / tps["batch1"],
        "max_abs_diff_vs_causal_lm": float((outs["harmref"] - outs["causal_lm"]).abs().max()),
        "guard_scoring_share_of_extraction": med["guard_scoring"] / med["harmref"],
    }
    params = sum(p.numel() for p in model.parameters())
    if args.model_config or dev.type == "cuda":
        dtype = next(model.parameters()).dtype
        rate = matmul_rate(args.device, dtype)
        # FLOPs per token ≈ 2 × the decoder's matmul parameters (embedding look-ups cost none; no LM head)
        emb = {id(model.get_input_embeddings().weight): model.get_input_embeddings().weight.numel(),
               id(model.get_output_embeddings().weight): model.get_output_embeddings().weight.numel()}
        body_params = params - sum(emb.values())
        result["parameters"] = params
        result["matmul_flops_per_s"] = rate
        result["fraction_of_matmul_rate"] = {k: 2 * body_params * tps[k] / rate for k in ("harmref", "body")}
    if args.sweep and not args.model_config:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import subprocess

        p = subprocess.run([sys.executable, str(ROOT / "benchmarks/steering_sweep.py"), "--prompts", "4", "--new-tokens", "8",
                            "--repeats", "2", "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        sweep = json.loads(p.stdout)
        result["sweep"] = {k: sweep[k] for k in ("rows", "median_s", "speedup_vs_per_layer", "overhead_vs_unsteered")}
    print(json.dumps(result, indent=2))
    if args.out:
        io.write_json(args.out, result)
    tmp.cleanup()


if __name__ == "__main__":
    main()
