"""The `harmref` command. Subcommands register in `SUBCOMMANDS`; each adds its parser and handler.

    harmref guard paper            # score the paper's released Qwen2 tensors (5 demo prompts)
    harmref guard score --centroids results/M/directions/directions.safetensors \\
                        --hidden results/M/hidden/xstest_safe.safetensors
    harmref guard check --guard results/M/guard "How do I bake bread?"   # exit 1 if any prompt is unsafe
    harmref guard fit --model results/models/M/model.json --harmful h.jsonl --harmless s.jsonl --out my_guard
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

    check = gsub.add_parser(
        "check", help="score raw prompts with a saved guard (its model is loaded and checked once); exit 1 if any is unsafe",
        description="Δharmful (and Δrefuse) of each prompt from the model's own hidden states. Exit status: "
                    "0 = all safe, 1 = at least one unsafe, 2 = an error (bad input, or a model or template that "
                    "is not the guard's).")
    check.add_argument("prompts", nargs="*", help="prompts to score (quote each); none: --input, or stdin")
    check.add_argument("--guard", required=True, help="guard folder (guard.json + centroids.safetensors), e.g. results/{model}/guard")
    check.add_argument("--input", default=None, help="prompt file: .jsonl (field `prompt`, optional `id`, `verbatim`), .txt (one a line) or .csv (column `prompt`); - = stdin")
    check.add_argument("--field", default=None, help="the prompt field of a JSONL/CSV input (default: prompt, text or instruction)")
    check.add_argument("--output", default=None, help="write one JSON line per prompt here (id, prompt, scores, verdict, guard_version)")
    check.add_argument("--model", default=None, help="the guard's model at another location (folder, model.json or hub id); it is checked against the guard")
    check.add_argument("--threshold", default=None, help="unsafe when Δharmful ≥ this (default: the guard's, 0 in the paper); `calibrated`: the guard's calibrated threshold")
    check.add_argument("--batch-size", type=int, default=None, help="prompts per forward pass (default: the guard's fitting run)")
    check.add_argument("--device", default="auto", help="auto, cpu, cuda, … (default auto)")
    check.add_argument("--dtype", default=None, help="model dtype (default: the one the guard was fitted with)")
    check.add_argument("--quiet", action="store_true", help="no per-prompt table and no progress bar; the summary line and the exit status only")
    check.set_defaults(func=_guard_check)

    fit = gsub.add_parser(
        "fit", help="build a guard folder for any chat model from a harmful and a harmless prompt file",
        description="The paper's defaults: 100 + 100 prompts, all layer entries, threshold 0; the harmful centroid "
                    "from the harmful prompts the model refuses (App. B; all when fewer than --min-group).")
    fit.add_argument("--model", required=True, help="a model card (results/models/M/model.json), a model folder, or a hub id in the local cache")
    fit.add_argument("--harmful", required=True, help="harmful prompts (.jsonl / .txt / .csv)")
    fit.add_argument("--harmless", required=True, help="harmless prompts (.jsonl / .txt / .csv)")
    fit.add_argument("--out", required=True, help="guard folder to write (guard.json + centroids.safetensors)")
    fit.add_argument("--n", type=int, default=100, help="prompts per file (a seeded sample when a file has more; default 100)")
    fit.add_argument("--layers", type=_layers, default=None, help="layer entries START:STOP averaged (default: all, as the paper)")
    fit.add_argument("--threshold", type=float, default=0.0, help="unsafe when Δharmful ≥ this (default 0)")
    fit.add_argument("--centroids", choices=["refused", "all"], default="refused",
                     help="harmful centroid from the refused harmful prompts (default, App. B) or from all of them")
    fit.add_argument("--min-group", type=int, default=5, help="fall back to all prompts of a label when its behaviour group is smaller (default 5)")
    fit.add_argument("--no-generate", action="store_true", help="do not generate replies (needs --centroids all; Δrefuse is then undefined)")
    fit.add_argument("--max-new-tokens", type=int, default=32, help="greedy reply length for the refusal judge (default 32)")
    fit.add_argument("--heldout-harmful", default=None, help="held-out harmful prompts: calibrate a threshold, reported beside --threshold")
    fit.add_argument("--heldout-harmless", default=None, help="held-out harmless prompts (with --heldout-harmful)")
    fit.add_argument("--normalise-endings", action="store_true", help="strip trailing punctuation and end with one '.' (as the DAG does for SmolLM2)")
    fit.add_argument("--system-prompt", default=None, help="system message (default: the template's own)")
    fit.add_argument("--template-date", default=None, help="the date a dated template (Llama 3) renders (default: harmref's fixed date)")
    fit.add_argument("--field", default=None, help="prompt field of JSONL/CSV files (default: prompt, text or instruction)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--device", default="auto")
    fit.add_argument("--dtype", default="auto")
    fit.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code (off by default)")
    fit.set_defaults(func=_guard_fit)


def _guard_check(args) -> int:
    import time

    from . import io
    from .latent_guard import GuardError, LatentGuard, read_prompt_file

    if args.prompts and args.input:
        raise GuardError("guard check: give prompts as arguments or --input FILE, not both")
    if args.prompts:
        records = [{"id": str(i), "prompt": t, "verbatim": False} for i, t in enumerate(args.prompts, 1)]
        for r in records:
            if not r["prompt"].strip():
                raise io.DataError("<arguments>", "empty prompt", record=r["id"])
        source = "<arguments>"
    elif args.input and args.input != "-":
        records, source = read_prompt_file(args.input, args.field), args.input
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise GuardError("guard check: give a prompt, --input FILE, or pipe prompts on stdin")
        records, source = read_prompt_file(None, args.field, stream=sys.stdin), "<stdin>"
    if not records:
        raise io.DataError(source, "no prompts")
    t0 = time.time()
    guard = LatentGuard.load(args.guard, model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    meta = guard.artefact_
    if args.threshold is not None:
        if args.threshold == "calibrated":
            if not meta.get("calibration"):
                raise GuardError(f"guard check: the guard {args.guard} has no calibrated threshold (fit it with --heldout-*)")
            guard.threshold = float(meta["calibration"]["threshold"])
        else:
            try:
                guard.threshold = float(args.threshold)
            except ValueError:
                raise GuardError(f"guard check: --threshold takes a number or `calibrated`, got {args.threshold!r}") from None
    load_s = time.time() - t0
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(records), desc="Latent Guard", unit="prompt", file=sys.stderr, leave=False)
    t1 = time.time()
    scores = guard.score_texts([r["prompt"] for r in records], verbatim=[r["verbatim"] for r in records],
                               progress=bar.update if bar else None, ids=[r["id"] for r in records], source=source)
    if bar:
        bar.close()
    score_s = time.time() - t1
    rows = [{"id": r["id"], **row} for r, row in zip(records, guard.rows([r["prompt"] for r in records], scores))]
    if args.output:
        io.write_jsonl(args.output, rows)
    if not args.quiet:
        import pandas as pd

        df = pd.DataFrame([{"id": r["id"], "verdict": r["verdict"], "Δharmful": f"{r['delta_harmful']:+.4f}",
                            "Δrefuse": "n/a" if r["delta_refuse"] is None else f"{r['delta_refuse']:+.4f}",
                            "prompt": r["prompt"] if len(r["prompt"]) <= 70 else r["prompt"][:67] + "..."} for r in rows])
        sys.stdout.write(df.to_markdown(index=False, disable_numparse=True, colalign=("left", "left", "right", "right", "left")) + "\n")
    k = sum(r["unsafe"] for r in rows)
    sys.stdout.write(f"{k} of {len(rows)} unsafe (Δharmful ≥ {guard.threshold:g}), guard {guard.version_} on "
                     f"{meta['model'].get('name') or meta['model'].get('source')}; model loaded and checked in {load_s:.1f} s, "
                     f"scored in {score_s:.1f} s{f'; rows in {args.output}' if args.output else ''}\n")
    return 1 if k else 0


def _guard_fit(args) -> int:
    from tqdm import tqdm

    from .latent_guard import fit_artefact

    bar = tqdm(desc="fit (hidden states, replies)", unit="prompt", file=sys.stderr, leave=False)
    meta = fit_artefact(
        args.model, args.harmful, args.harmless, args.out, n=args.n, layers=args.layers, threshold=args.threshold,
        centroids=args.centroids, min_group=args.min_group, generate=not args.no_generate,
        max_new_tokens=args.max_new_tokens, heldout_harmful=args.heldout_harmful, heldout_harmless=args.heldout_harmless,
        normalise_endings=args.normalise_endings, system_prompt=args.system_prompt, template_date=args.template_date,
        field=args.field, seed=args.seed,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
        progress=bar.update,
    )
    bar.close()
    t = meta["training"]
    sys.stdout.write(
        f"guard {meta['version']} → {args.out}: model {meta['model'].get('name')} (identity {meta['model']['identity'][:16]}…), "
        f"{t['harmful']['n_used']} harmful + {t['harmless']['n_used']} harmless prompts "
        f"(centroids from {t['harmful']['n_centroid']} + {t['harmless']['n_centroid']}), layers {meta['layers'][0]}:{meta['layers'][1]}, "
        f"threshold {meta['threshold']:g}\n")
    cal = meta.get("calibration")
    if cal:
        sys.stdout.write(
            f"held-out accuracy {cal['accuracy_at_threshold']:.3f} at threshold {meta['threshold']:g}, "
            f"{cal['accuracy_calibrated']:.3f} at the calibrated {cal['threshold']:+.5f} (AUROC {cal['auroc']:.3f}); "
            "verdicts use the threshold; `guard check --threshold calibrated` uses the calibrated one\n")
    return 0


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
        judged = judging.judge_file(args.path, judge)
    except ollama.OllamaError as e:
        sys.stderr.write(f"harmref: {e}\n")
        return 3
    if args.out:
        io.write_jsonl(args.out, judged)
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

    from .latent_guard import GuardError
    from .models import ModelError

    try:
        return args.func(args)
    except (DataError, GuardError, ModelError) as e:
        sys.stderr.write(f"harmref: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
