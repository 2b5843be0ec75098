"""The `harmref` command. Subcommands register in `SUBCOMMANDS`; each adds its parser and handler.

    harmref guard paper            # score the paper's released Qwen2 tensors (5 demo prompts)
    harmref guard score --centroids results/M/directions/directions.safetensors \\
                        --hidden results/M/hidden/xstest_safe.safetensors
    harmref judge results/M/generations/chat/advbench.jsonl --out judged.jsonl
"""

from __future__ import annotations

import argparse
import logging
import sys


def _layers(text: str | None):
    if text is None:
        return None
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes START:STOP (entries START..STOP-1), got {text!r}") from None
    return (start, stop)


# ------------------------------------------------------------------ guard
def add_guard(sub) -> None:
    p = sub.add_parser("guard", help="Latent Guard: Δharmful at t_inst ≥ threshold ⇒ unsafe (paper §5.1)")
    gsub = p.add_subparsers(dest="guard_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--layers", type=_layers, default=None, help="layer entries START:STOP averaged (default: all, as the paper)")
    common.add_argument("--threshold", type=float, default=0.0, help="unsafe when Δharmful ≥ this (default 0)")
    common.add_argument("--out", default=None, help="also write the rows to OUT.csv and OUT.md")

    paper = gsub.add_parser("paper", parents=[common], help="score the paper's released Qwen2 tensors (sha256-checked pickles)")
    paper.add_argument("--root", default=None, help="folder of the released .pt files (default: data/<official repo>/src/run)")
    paper.set_defaults(func=_guard_paper)

    score = gsub.add_parser("score", parents=[common], help="score our hidden states (safetensors) with our centroids")
    score.add_argument("--centroids", required=True, help="directions.safetensors (mu_harmful, mu_harmless, mu_refused, mu_accepted [layers, P, d])")
    score.add_argument("--hidden", required=True, help="hidden-state file results/{model}/hidden/{set}.safetensors (with its .json sidecar)")
    score.set_defaults(func=_guard_score)


def _emit(rows, out) -> None:
    import pandas as pd

    from . import io

    df = pd.DataFrame(rows)
    sys.stdout.write(df.to_markdown(index=False, floatfmt="+.4f") + "\n")
    if out:
        io.write_table(df, out, floatfmt=".4f")


def _guard_paper(args) -> int:
    from pathlib import Path

    from .latent_guard import PAPER_DIR, paper_demo

    root = args.root or str(Path("data") / PAPER_DIR)
    rows = paper_demo(root, layers=args.layers, threshold=args.threshold)
    sys.stdout.write("Released Qwen2-7B-Instruct tensors: 5 harmless prompts the model refuses (classifier.ipynb).\n"
                     "Δharmful at position 0 (t_inst), Δrefuse at position −1 (t_post-inst).\n\n")
    _emit(rows, args.out)
    return 0


def _guard_score(args) -> int:
    from . import io
    from .latent_guard import guard_metrics, position_index, score_hidden

    cents = io.read_tensors(args.centroids)
    missing = {"mu_harmful", "mu_harmless", "mu_refused", "mu_accepted"} - set(cents)
    if missing:
        raise SystemExit(f"{args.centroids}: missing tensors {sorted(missing)}")
    hidden = io.read_tensors(args.hidden)["hidden"]
    meta = io.read_sidecar(args.hidden)
    cmeta = io.read_sidecar(args.centroids)
    if cmeta.get("positions") != meta["positions"]:
        raise SystemExit(f"positions differ: centroids {cmeta.get('positions')} vs hidden {meta['positions']}")
    inst = position_index(meta["positions"], "t_inst")
    post = len(meta["positions"]) - 1
    scores = score_hidden(hidden, cents, inst, post, layers=args.layers, threshold=args.threshold)
    rows = [
        {"id": i, "label": lab, "delta_harmful": float(a), "latent_guard": "unsafe" if a >= args.threshold else "safe",
         "delta_refuse": float(b)}
        for i, lab, a, b in zip(meta["ids"], meta["labels"], scores["delta_harmful"], scores["delta_refuse"])
    ]
    _emit(rows, args.out)
    m = guard_metrics(scores["delta_harmful"], [lab == "harmful" for lab in meta["labels"]], args.threshold)
    sys.stdout.write(f"\nn = {m['n']}, accuracy = {m['accuracy']:.3f}, AUROC = {m['auroc']:.3f} (NaN when one label is absent)\n")
    return 0


# ------------------------------------------------------------------ judge
def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return x


def add_judge(sub) -> None:
    p = sub.add_parser("judge", help="judge any JSONL of {prompt, response} records for refusal")
    p.add_argument("path", help="JSONL file; each record needs `prompt` and `response`")
    p.add_argument("--judge", default="substring", choices=["substring", "ollama"], help="refusal judge (default: the paper's 24 phrases)")
    p.add_argument("--host", default="http://127.0.0.1:11434", help="Ollama host (judge ollama)")
    p.add_argument("--model", default="llama3.1:8b", help="Ollama model (judge ollama)")
    p.add_argument("--timeout", type=_seconds, default=60.0,
                   help="seconds each Ollama request may take in all, connection to last byte (judge ollama; default 60)")
    p.add_argument("--out", default=None, help="write the judged records here (JSONL); default: print a summary only")
    p.set_defaults(func=_judge)


def _judge(args) -> int:
    """Exit 0 when judged, 2 on bad input, 3 when the Ollama server fails (the message names host and model)."""
    from . import io, judging, ollama

    kwargs = {"host": args.host, "model": args.model, "timeout": args.timeout} if args.judge == "ollama" else {}
    judge = judging.make_judge(args.judge, **kwargs)
    try:
        judge.check()  # the server and the model first, before any record is read or judged
        records = io.read_jsonl(args.path)
        for r in records:
            for field in ("prompt", "response"):
                if not isinstance(r.get(field), str):
                    raise io.DataError(args.path, "missing or non-string field", record=f"line {r['_line']}", field=field)
        judged = judging.judge_records(records, judge)
    except ollama.OllamaError as e:
        sys.stderr.write(f"harmref: {e}\n")
        return 3
    if args.out:
        io.write_jsonl(args.out, [{k: v for k, v in r.items() if k != "_line"} for r in judged])
    n = len(judged)
    bad = sum(r["refused"] is None for r in judged)
    k = sum(bool(r["refused"]) for r in judged)
    rate = k / (n - bad) if n - bad else float("nan")
    sys.stdout.write(f"{args.path}: {k} / {n - bad} refused ({rate:.1%}), {bad} invalid verdicts, judge {args.judge}\n")
    return 0


SUBCOMMANDS = [add_guard, add_judge]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harmref", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .io import DataError

    try:
        return args.func(args)
    except DataError as e:
        sys.stderr.write(f"harmref: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
