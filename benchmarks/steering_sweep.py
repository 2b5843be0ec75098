"""Benchmark: a steering sweep over every layer as one batched job vs one generate call per layer.

Three ways to generate the same rows (N prompts × every layer of the model, +harmfulness
direction at the input of that layer, prompt pass only, greedy):

  sweep      harmref.steering.run_sweep over all rows, `--batch-size` rows per generate call,
             each row carrying its own layer (per-row hooks on every layer);
  per_layer  one generate call per layer on that layer's N rows (the shape of the official code's
             layer loop, but batched over prompts);
  unsteered  the same total rows with no intervention, same batch size (the floor);
  per_row    (with --per-row-layers K) the official code's shape: one generate call per
             (layer, prompt), batch size 1, timed on K layers and scaled to all of them.

The modes are interleaved over `--repeats` rounds to spread out CPU contention; the median is reported.
The per-layer run's tokens are checked against the sweep's (they must be identical).

    .venv/bin/python benchmarks/steering_sweep.py --prompts 4 --new-tokens 8 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harmref import activations, io, models, positions, steering

DATA = Path(__file__).resolve().parents[1] / "data" / "andyrdt_refusal_direction" / "dataset" / "splits"


def harmfulness_direction(model, tok, fmt, n: int = 16) -> torch.Tensor:
    """Difference in means at t_inst of n harmful vs n harmless train prompts: [L+1, d]."""
    harmful = [r["instruction"] for r in io.read_records(DATA / "harmful_train.json")[:n]]
    harmless = [r["instruction"] for r in io.read_records(DATA / "harmless_train.json")[:n]]
    h1, labels, _ = activations.hidden_states(model, tok, fmt, harmful)
    h0, _, _ = activations.hidden_states(model, tok, fmt, harmless)
    i = labels.index("t_inst")
    return (h1[:, :, i].double().mean(0) - h0[:, :, i].double().mean(0)).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=4, help="prompts per layer")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128, help="rows per generate call in the batched modes")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared, oversubscribed CPU)")
    ap.add_argument("--per-row-layers", type=int, default=0, help="also time batch-size-1 calls on this many layers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dir", default=None, help="a prepared model directory (default: prepare the embedded SmolLM2 in a temp dir)")
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or models.prepare("embedded", Path(tmp) / "smollm2")["path"]
        model, tok = models.load(Path(model_dir) / "model.json" if (Path(model_dir) / "model.json").exists() else model_dir,
                                 args.device, "float32" if args.device == "cpu" else "auto")
    fmt = positions.ChatFormat.from_tokenizer(tok)
    n_layers = models.n_layers(model)
    direction = harmfulness_direction(model, tok, fmt)
    prompts = [r["instruction"] for r in io.read_records(DATA / "harmless_test.json")[: args.prompts]]

    rows_i = [p for _ in range(n_layers) for p in prompts]
    rows_s = [steering.Steer.add(l, direction[l]) for l in range(n_layers) for _ in prompts]
    kw = dict(max_new_tokens=args.new_tokens, keep_ids=True)

    def sweep():
        return steering.run_sweep(model, tok, fmt, rows_i, rows_s, batch_size=args.batch_size, **kw)

    def per_layer():
        out = []
        for l in range(n_layers):
            out += steering.run_sweep(model, tok, fmt, prompts, [rows_s[l * len(prompts)]] * len(prompts),
                                      batch_size=len(prompts), **kw)
        return out

    def unsteered():
        return steering.run_sweep(model, tok, fmt, rows_i, [steering.NONE] * len(rows_i), batch_size=args.batch_size, **kw)

    row_layers = list(range(0, n_layers, max(1, n_layers // args.per_row_layers)))[: args.per_row_layers] if args.per_row_layers else []

    def per_row():
        for l in row_layers:
            for p in prompts:
                steering.run_sweep(model, tok, fmt, [p], [rows_s[l * len(prompts)]], batch_size=1, **kw)

    modes = [("sweep", sweep), ("per_layer", per_layer), ("unsteered", unsteered)] + ([("per_row", per_row)] if row_layers else [])
    times = {name: [] for name, _ in modes}
    outputs = {}
    sweep()  # warm-up (allocator, kernels)
    for _ in range(args.repeats):
        for name, fn in modes:
            t0 = time.perf_counter()
            outputs[name] = fn()
            dt = time.perf_counter() - t0
            times[name].append(dt * n_layers / len(row_layers) if name == "per_row" else dt)
    same = [a["token_ids"] for a in outputs["sweep"]] == [b["token_ids"] for b in outputs["per_layer"]]
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": args.device, "threads": args.threads, "layers": n_layers, "prompts_per_layer": args.prompts,
        "rows": len(rows_i), "new_tokens": args.new_tokens, "batch_size": args.batch_size,
        "generate_calls": {"sweep": -(-len(rows_i) // args.batch_size), "per_layer": n_layers,
                           "unsteered": -(-len(rows_i) // args.batch_size), "per_row": len(rows_i)},
        "seconds": times, "median_s": med,
        "speedup_vs_per_layer": med["per_layer"] / med["sweep"],
        "overhead_vs_unsteered": med["sweep"] / med["unsteered"],
        **({"speedup_vs_per_row": med["per_row"] / med["sweep"], "per_row_layers_timed": row_layers} if row_layers else {}),
        "sweep_tokens_equal_per_layer_tokens": same,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        io.write_json(args.out, result)


if __name__ == "__main__":
    main()
