"""Benchmark: batched greedy generation, HF `model.generate` vs harmref's loop that drops finished rows.

The same rows in both modes: `--prompts` harmful + `--prompts` harmless train prompts, sorted by
length and cut into batches of `--batch-size` as harmref.generation.generate does, `--new-tokens`
new tokens. Each batch is decoded by both methods of harmref.generation.greedy_ids ("hf":
model.generate(do_sample=False); "loop": finished rows leave the batch and the KV cache;
"loop_prefix": the loop with `shared_prefix=True`, the template's common head run once per batch); the
tokens must be identical (the script fails otherwise). Reported: wall time per mode (median over
`--repeats` interleaved rounds), their ratio, and the rows × steps each mode forwards.

    .venv/bin/python benchmarks/generation.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harmref import generation, io, models, positions
from harmref.activations import sort_by_length

DATA = Path(__file__).resolve().parents[1] / "data" / "andyrdt_refusal_direction" / "dataset" / "splits"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32, help="harmful and as many harmless prompts")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dir", default=None, help="a prepared model directory (default: the embedded SmolLM2, prepared in a temp dir)")
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir or models.prepare("embedded", Path(tmp) / "smollm2")["path"])
        card = model_dir / "model.json" if (model_dir / "model.json").exists() else model_dir
        model, tok = models.load(card, args.device, "float32" if args.device == "cpu" else "auto")
    fmt = positions.ChatFormat.from_tokenizer(tok)
    prompts = ([r["instruction"] for r in io.read_records(DATA / "harmful_train.json")[: args.prompts]]
               + [r["instruction"] for r in io.read_records(DATA / "harmless_train.json")[: args.prompts]])
    order = sort_by_length([len(fmt.render(x)[0]) for x in prompts])
    batches = [positions.encode(tok, fmt, [prompts[i] for i in order[s: s + args.batch_size]])
               for s in range(0, len(order), args.batch_size)]

    modes = {"hf": dict(method="hf"), "loop": dict(method="loop", shared_prefix=False),
             "loop_prefix": dict(method="loop", shared_prefix=True)}
    rows_seen = {m: 0 for m in modes}
    counting = {"on": None}

    def count(_m, _a, kw):
        if counting["on"]:
            rows_seen[counting["on"]] += kw["input_ids"].shape[0]

    def run(mode):
        if device_is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = [generation.greedy_ids(model, tok, b, args.new_tokens, **modes[mode]).cpu() for b in batches]
        if device_is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    device_is_cuda = torch.device(args.device).type == "cuda"
    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    ref = {}
    for mode in modes:  # one counted warm-up round, which also gives the tokens to compare
        counting["on"] = mode
        _, ref[mode] = run(mode)
    counting["on"] = None
    handle.remove()
    same = {m: all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(ref["hf"], ref[m])) for m in modes}
    if not all(same.values()):
        raise SystemExit(f"tokens differ from HF generate's: {same}")
    times = {m: [] for m in modes}
    for _ in range(args.repeats):
        for method in times:
            times[method].append(run(method)[0])
    # what reusing the chat template's shared prefix could save at most: its share of the prompt tokens times the
    # prefill's share of the loop's time (the prefill is timed alone, one forward per batch, last logits only)
    all_ids = [positions.tokenize_prompt(tok, fmt, p)[0] for p in prompts]
    prefix_len = next((k for k in range(min(map(len, all_ids))) if len({ids[k] for ids in all_ids}) > 1),
                      min(map(len, all_ids)))  # tokens every prompt starts with
    prompt_tokens = sum(int(b.attention_mask.sum()) for b in batches)
    prefill = []
    with torch.no_grad():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for b in batches:
                model(input_ids=b.input_ids.to(args.device), attention_mask=b.attention_mask.to(args.device), logits_to_keep=1)
            if device_is_cuda:
                torch.cuda.synchronize()
            prefill.append(time.perf_counter() - t0)
    eos = tok.eos_token_id
    lengths = [int((r == eos).nonzero()[0]) + 1 if (r == eos).any() else r.shape[0] for b in ref["hf"] for r in b]
    med = {m: statistics.median(t) for m, t in times.items()}
    res = {
        "prompts": len(prompts), "batch_size": args.batch_size, "new_tokens": args.new_tokens, "threads": args.threads,
        "device": args.device, "repeats": args.repeats, "tokens_identical": same,
        "reply_tokens": {"total": sum(lengths), "min": min(lengths), "median": statistics.median(lengths), "max": max(lengths),
                         "ended_by_eos": sum(1 for b in ref["hf"] for r in b if (r == eos).any())},
        "rows_forwarded": rows_seen, "seconds_median": med, "seconds_all": times,
        "ratio_loop_over_hf": med["loop"] / med["hf"], "ratio_loop_prefix_over_loop": med["loop_prefix"] / med["loop"],
        "prefill_seconds_median": statistics.median(prefill), "prompt_tokens": prompt_tokens,
        "shared_prefix_tokens_per_prompt": prefix_len,
        "prefix_reuse_saving_bound": statistics.median(prefill) / med["loop"] * prefix_len * len(prompts) / prompt_tokens,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
