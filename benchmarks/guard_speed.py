"""Benchmark: the Latent Guard as a guard on raw text (`LatentGuard.load` → `score`) vs the MiniLM classifier.

On one analysed model's guard artefact (default: the organism, `results/smollm2-135m-refusal/guard`):

  throughput   prompts/s scoring the held-out harmful_test + harmless_test prompts in batches
               (the guard's batch size, 16 on the default config; MiniLM encodes 32 at a time);
  latency      seconds per prompt when each prompt comes alone (batch of 1), median and p90
               over `--latency-prompts` prompts;
  load         seconds to load each guard (the Latent Guard hashes the model's files and checks its
               template before loading it; MiniLM loads its encoder and is trained on the same
               100 + 100 prompts as the DAG's minilm_guard rule, training time reported apart).

Then the Table 3 sets are scored through this path (raw prompt files → the API) and compared with the
DAG: max |Δharmful(API) − Δharmful(DAG)| over every scored prompt, and the Latent Guard's accuracy per
Table 3 row from the API beside the DAG's table. Timings use `--threads` torch threads (2 by default,
the project's CPU budget); the machine may be shared, so the numbers are wall-clock under that load.

    .venv/bin/python benchmarks/guard_speed.py                       # the organism; writes benchmarks/guard_speed_threads2.{csv,md,json}
    .venv/bin/python benchmarks/guard_speed.py --workdir .test --model tiny --out /tmp/guard_speed   # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harmref import guards, io, latent_guard  # noqa: E402


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=str(ROOT), help="the DAG's working directory (holds results/)")
    ap.add_argument("--model", default="smollm2-135m-refusal")
    ap.add_argument("--guard", default=None, help="a guard folder (default: WORKDIR/results/MODEL/guard); the Table 3 "
                                                  "comparison runs only for a DAG artefact (beside scores.jsonl)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-prompts", type=int, default=20)
    ap.add_argument("--sets", default="harmful_test,harmless_test", help="sets for throughput and latency")
    ap.add_argument("--train", default="harmful_train,harmless_train", help="MiniLM training sets (as rule minilm_guard)")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--out", default=None, help="output stem (default: benchmarks/guard_speed_threads{N})")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out = args.out or str(ROOT / "benchmarks" / f"guard_speed_threads{args.threads}")
    wd = Path(args.workdir)
    data = wd / "results" / "data"
    gdir = Path(args.guard) if args.guard else wd / "results" / args.model / "guard"

    recs = [r for s in args.sets.split(",") for r in io.read_jsonl(data / f"{s}.jsonl")]
    texts = [r["prompt"] for r in recs]
    single = texts[: args.latency_prompts]
    rows = []

    # ---- Latent Guard
    guard, load_s = timed(latent_guard.LatentGuard.load, gdir)
    guard.score_texts(texts[:2])  # warm-up (first forward pass)
    _, tp_s = timed(guard.score_texts, texts)
    lat = [timed(guard.score_texts, [t])[1] for t in single]
    rows.append({"guard": f"Latent Guard ({args.model}, {guard.artefact_['version']})", "load_s": load_s, "train_s": 0.0,
                 "n_prompts": len(texts), "batch_size": guard.batch_size_, "prompts_per_s": len(texts) / tp_s,
                 "latency_median_ms": 1000 * statistics.median(lat), "latency_p90_ms": 1000 * float(np.quantile(lat, 0.9))})

    # ---- MiniLM + logistic regression
    if not args.no_minilm:
        train = [r for s in args.train.split(",") for r in io.read_jsonl(data / f"{s}.jsonl")]
        enc, enc_s = timed(guards.minilm_encoder)
        mini = guards.MiniLMGuard(encoder=enc)
        _, train_s = timed(mini.fit, [r["prompt"] for r in train], [r["label"] == "harmful" for r in train])
        mini.decision_function(texts[:2])
        _, mtp_s = timed(mini.decision_function, texts)
        mlat = [timed(mini.decision_function, [t])[1] for t in single]
        rows.append({"guard": "MiniLM + LR", "load_s": enc_s, "train_s": train_s, "n_prompts": len(texts), "batch_size": 32,
                     "prompts_per_s": len(texts) / mtp_s, "latency_median_ms": 1000 * statistics.median(mlat),
                     "latency_p90_ms": 1000 * float(np.quantile(mlat, 0.9))})
    speed = pd.DataFrame(rows)

    io.write_table(speed, args.out, floatfmt=".2f")
    print(speed.to_markdown(index=False, floatfmt=".2f"))
    import os

    summary = {"threads": args.threads, "torch_threads": torch.get_num_threads(), "guard": str(gdir),
               "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count(),
               "guard_version": guard.artefact_["version"], "created_by": guard.artefact_["created_by"],
               "texts": args.sets}
    if not (gdir / "scores.jsonl").exists():
        print(f"\n{gdir} is not a DAG artefact (no scores.jsonl): Table 3 comparison skipped")
        io.write_json(args.out + ".json", summary)
        return 0

    # ---- the Table 3 sets through this path vs the DAG
    dag = pd.DataFrame(io.read_jsonl(gdir / "scores.jsonl"))
    ours = []
    for s in dag["set"].unique():
        rs = io.read_jsonl(data / f"{s}.jsonl")
        out = guard.score([r["prompt"] for r in rs], verbatim=[bool(r.get("verbatim")) for r in rs])
        ours += [{"set": s, "id": r["id"], "api": o["delta_harmful"], "api_unsafe": o["unsafe"]} for r, o in zip(rs, out)]
    merged = dag.merge(pd.DataFrame(ours), on=["set", "id"], how="left")
    max_diff = float((merged["api"] - merged["delta_harmful"]).abs().max())
    table3 = pd.read_csv(wd / "results" / args.model / "tables" / "table3_guards.csv")
    acc = []
    for t in table3[table3["n"] > 0].to_dict("records"):
        sel = guards.test_rows(merged, {"set": t["dataset"], "keep": t["keep"]})
        api = 100.0 * float((sel["api_unsafe"].astype(bool) == (sel["label"] == "harmful")).mean())
        acc.append({"test_set": t["test_set"], "dataset": t["dataset"], "n": int(t["n"]),
                    "latent_guard_dag": t["latent_guard"], "latent_guard_api": api, "equal": abs(api - t["latent_guard"]) < 1e-9})
    acc = pd.DataFrame(acc)

    io.write_table(acc, args.out + "_table3", floatfmt=".1f")
    summary.update(max_abs_delta_harmful_diff=max_diff, n_scored=int(len(merged)), all_rows_equal=bool(acc["equal"].all()))
    io.write_json(args.out + ".json", summary)
    print()
    print(acc.to_markdown(index=False, floatfmt=".1f"))
    print(json.dumps(summary))
    return 0 if summary["all_rows_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
