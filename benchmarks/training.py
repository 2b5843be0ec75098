"""Benchmark: one optimiser step of the organism's training in fp32 vs bf16 autocast (organism.train.precision).

The same steps in both modes: `--steps` batches of `--batch-size` examples from a `train_data.jsonl`
(rule organism_data's output; default: the organism of the default run), tokenized with the model's chat
template, in micro-batches of `--micro-batch-size`, exactly as harmref.training.train runs them
(`training.step_loss`, AdamW, gradient clipping). Each round trains a fresh copy of the base model; the
rounds alternate fp32 / bf16. Reported: seconds per step (median over `--repeats` rounds, after a warm-up
step), their ratio, the mean loss of each mode's steps, and whether this CPU has native bf16
(`training.cpu_native_bf16`).

    .venv/bin/python benchmarks/training.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from harmref import io, models, positions, training


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/model.json", help="the base model's card")
    ap.add_argument("--data", default="results/models/smollm2-135m-refusal/train_data.jsonl")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    base, tok = models.load(args.model, "cpu", "float32")
    fmt = positions.ChatFormat.from_tokenizer(tok)
    examples = [{k: v for k, v in r.items() if k != "_line"} for r in io.read_jsonl(args.data)]
    data = training.tokenize(tok, fmt, examples)
    order = training.batch_order([len(x["input_ids"]) for x in data], args.batch_size, args.steps + 1, seed=0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def run(precision):
        model = training.prepare_trainable(copy.deepcopy(base), training.TrainConfig())
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-5)
        times, losses = [], []
        for k, rows in enumerate(order):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = training.step_loss(model, [data[i] for i in rows], pad, args.micro_batch_size, "cpu", precision)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if k:  # the first step warms up
                times.append(time.perf_counter() - t0)
                losses.append(loss)
        return statistics.mean(times), statistics.mean(losses)

    rounds = {"fp32": [], "bf16": []}
    loss = {}
    for _ in range(args.repeats):
        for precision in rounds:
            s, loss[precision] = run(precision)
            rounds[precision].append(s)
    med = {p: statistics.median(v) for p, v in rounds.items()}
    out = {
        "steps": args.steps, "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size,
        "threads": args.threads, "examples": len(data),
        "tokens_per_step": statistics.mean(sum(len(data[i]["input_ids"]) for i in rows) for rows in order[1:]),
        "seconds_per_step_median": med, "seconds_per_step_all": rounds,
        "ratio_bf16_over_fp32": med["bf16"] / med["fp32"], "mean_loss": loss,
        "cpu_native_bf16": training.cpu_native_bf16(), "auto_resolves_to": training.resolve_precision("auto", "cpu"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "load_average": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
