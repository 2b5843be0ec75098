"""Adversarial suffixes optimised against the model itself with nanoGCG (the paper's "adv-suffix" jailbreak set).

Each goal (e.g. an AdvBench behaviour) gets its own suffix, optimised so that the
model's reply starts with the goal's target ("Sure, here is …"); the prompt the
model is then tested on is the goal followed by the suffix, chosen by `select` on
the whole, re-tokenized prompt. Whether a prompt actually jailbreaks the model is
judged afterwards, like every other set (Table 3 counts only those).

nanoGCG 0.3.0 pins transformers<=4.47.1 but runs on transformers 5 with one
change, made here: its prefix KV cache indexes the legacy tuple cache, which
transformers 5 removed, so `use_prefix_cache` is always off (the prompt prefix is
recomputed for every candidate: slower, same result). Install it with
`pip install --no-deps nanogcg==0.3.0` (setup.sh does).
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import torch

from . import io
from .generation import open_checkpoint
from .positions import DEFAULT_TEMPLATE_DATE, ChatFormat, control_strings, fixed_date, tokenize_prompt

log = logging.getLogger(__name__)

PLACEHOLDER = "{optim_str}"


def _nanogcg():
    try:
        import nanogcg
    except ImportError as err:  # pragma: no cover - exercised only without the package
        raise ImportError(
            "guard.gcg.enabled needs nanoGCG: pip install --no-deps nanogcg==0.3.0 "
            "(--no-deps: it pins transformers<=4.47.1; harmref runs it on transformers 5)"
        ) from err
    return nanogcg


def init_string(init: str) -> str:
    """The initial suffix, starting with the space that separates it from the goal.

    The space belongs to the optimised tokens ("Ġx"/"▁x"), not to the goal: nanoGCG tokenizes
    the text before the suffix on its own, and a goal ending in a space would end in a lone
    space token that never occurs when the whole prompt is tokenized, so the suffix would be
    optimised for a token sequence the model is never shown.
    """
    return init if init[:1].isspace() else " " + init


def joins(goal: str, suffix: str) -> list[str]:
    """The texts a decoded suffix may stand for: `goal + suffix` as decoded, and with a space between.

    nanoGCG optimises token ids and hands back their decoded string. A byte-level BPE
    decodes a leading "Ġx" as " x", so `goal + suffix` is exact; a SentencePiece
    tokenizer decodes a leading "▁x" as "x", so the space has to be put back.
    """
    out = [goal + suffix]
    if not suffix[:1].isspace():
        out.append(goal + " " + suffix)
    return out


@torch.no_grad()
def target_fit(model, tokenizer, fmt, prompts: list[str], target: str, batch_size: int = 16) -> list[tuple[bool, float]]:
    """For each user message: does greedy decoding give `target` exactly, and the mean cross-entropy of it.

    The prompt is rendered and tokenized as a whole, as the model is shown it later (not
    in pieces, as nanoGCG does), and the target tokens are teacher-forced after it.
    """
    tgt = tokenizer(target, add_special_tokens=False)["input_ids"]
    from .models import input_device

    device = input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for i in range(0, len(prompts), batch_size):
        seqs = [tokenize_prompt(tokenizer, fmt, p)[0] + tgt for p in prompts[i:i + batch_size]]
        width = max(map(len, seqs))
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, width - len(tgt) - 1:-1].float()
        labels = torch.tensor(tgt, device=device).expand(len(seqs), -1)
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(-1)
        exact = (logits.argmax(-1) == labels).all(-1)
        out += [(bool(e), float(c)) for e, c in zip(exact.tolist(), ce.tolist())]
    return out


def select(model, tokenizer, fmt, goal: str, target: str, strings: list[str], batch_size: int = 16) -> tuple[str, bool, float]:
    """The attacked prompt to keep: among every step's best suffix (both joins), one whose whole-prompt
    greedy reply is the target if any, else the lowest whole-prompt loss.

    nanoGCG keeps the lowest mean loss under its own piecewise tokenization, and its early
    stop fires when *any* candidate of a step decodes the target; neither guarantees that
    the prompt as later tokenized elicits the target. Returns (prompt, exact, loss).
    """
    prompts = list(dict.fromkeys(p for s in strings for p in joins(goal, s)))
    fits = target_fit(model, tokenizer, fmt, prompts, target, batch_size)
    best = min(range(len(prompts)), key=lambda i: (not fits[i][0], fits[i][1]))
    return prompts[best], fits[best][0], fits[best][1]


def config(spec: dict, seed: int):
    """A nanoGCG GCGConfig from the `guard.gcg` block."""
    nanogcg = _nanogcg()
    return nanogcg.GCGConfig(
        num_steps=spec["num_steps"],
        optim_str_init=init_string(spec["optim_str_init"]),
        search_width=spec["search_width"],
        batch_size=spec.get("batch_size"),
        topk=spec["topk"],
        n_replace=spec["n_replace"],
        early_stop=spec["early_stop"],
        use_prefix_cache=False,  # nanoGCG 0.3.0's prefix cache needs transformers<5 (see module docstring)
        seed=seed,
        verbosity="WARNING",
    )


def messages(goal: str, system_prompt: str | None = None) -> list[dict]:
    """The chat the suffix is optimised in: the same user message (and system prompt) harmref renders."""
    out = [{"role": "user", "content": f"{goal}{PLACEHOLDER}"}]
    if system_prompt is not None:
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def attack(model, tokenizer, goal: str, target: str, cfg, system_prompt: str | None = None,
           template_date=DEFAULT_TEMPLATE_DATE) -> dict:
    """Optimise one suffix; returns the attacked prompt, the suffix, losses and the time taken.

    `best_loss` is nanoGCG's; `prompt_loss` and `exact` are those of the kept prompt,
    tokenized whole (see `select`).
    """
    nanogcg = _nanogcg()
    t0 = time.perf_counter()
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with fixed_date(template_date):  # nanoGCG renders the template itself: same date as harmref's
            result = nanogcg.run(model, tokenizer, messages(goal, system_prompt), target, cfg)
    finally:  # nanoGCG switches deterministic algorithms on globally for a seeded run
        torch.use_deterministic_algorithms(det, warn_only=warn)
    fmt = ChatFormat.from_tokenizer(tokenizer, system_prompt, date=template_date)
    prompt, exact, loss = select(model, tokenizer, fmt, goal, target, [result.best_string, *result.strings])
    seconds = time.perf_counter() - t0
    return {
        "prompt": prompt,
        "suffix": prompt[len(goal):].strip(),
        "target": target,
        "initial_loss": float(result.losses[0]),
        "best_loss": float(result.best_loss),
        "prompt_loss": loss,
        "exact": exact,
        "steps": len(result.losses),
        "seconds": round(seconds, 1),
    }


def attack_set(model, tokenizer, goals: list[dict], spec: dict, seed: int, system_prompt: str | None = None,
               checkpoint=None, checkpoint_key=None, progress=None, template_date=DEFAULT_TEMPLATE_DATE) -> list[dict]:
    """Attack every goal in order; finished goals are appended to `checkpoint` and skipped on a rerun.

    `goals`: dataset records ({id, prompt, category, target?}); the attack's records
    are `{id, goal_id, prompt, label, source, category, verbatim, target, suffix, …}`.
    `checkpoint_key`: `models.checkpoint_key(card, model)`, so other weights start over.
    """
    for g in goals:
        found = control_strings(tokenizer, g["prompt"])
        if found:
            raise ValueError(
                f"goal {g['id']!r} contains {found[0]!r}, a control token of the model's tokenizer: nanoGCG would "
                "optimise the suffix with it encoded as a control token, while harmref encodes prompt text as text "
                "(harmref.positions), so the suffix would fit a prompt the model is never shown; drop the goal or "
                "remove the string from it"
            )
    fmt = ChatFormat.from_tokenizer(tokenizer, system_prompt, date=template_date)
    fingerprint = io.sha256_text(repr([spec, seed, system_prompt, checkpoint_key, [(g["id"], g["prompt"]) for g in goals],
                                       fmt.fingerprint]))
    done = {} if checkpoint is None else open_checkpoint(checkpoint, fingerprint, key="goal_id", what="goals")
    out = []
    for g in goals:
        if g["id"] in done:
            out.append(done[g["id"]])
        else:
            target = g.get("target") or spec["target"]
            res = attack(model, tokenizer, g["prompt"], target, config(spec, seed), system_prompt, template_date)
            rec = {"id": f"gcg:{g['id']}", "goal_id": g["id"], "label": "harmful", "source": "nanogcg",
                   "category": g.get("category"), "verbatim": True, "goal": g["prompt"], **res}
            log.info("%s: loss %.3f → %.3f in %d steps, %.0f s; kept prompt: loss %.3f, greedy reply %s the target",
                     g["id"], res["initial_loss"], res["best_loss"], res["steps"], res["seconds"], res["prompt_loss"],
                     "is" if res["exact"] else "is not")
            if checkpoint is not None:
                io.append_jsonl(checkpoint, [rec])
            out.append(rec)
        if progress is not None:
            progress(1)
    return out


VARIANTS = ("plain", "init", "gcg")  # the goal alone, + the initial suffix, + the optimised suffix


def report(records: list[dict], replies: dict[str, list[str]] | None = None,
           refused: dict[str, list[bool]] | None = None) -> pd.DataFrame:
    """One row per goal: losses, steps, time, the suffix and, when given, the greedy replies.

    `refused`: per variant in VARIANTS, the judge's verdicts; `replies["gcg"]`: the replies to the
    attacked prompts.
    The `init` column tells whether the optimisation or merely appending a suffix broke the refusal.
    """
    rows = []
    for i, r in enumerate(records):
        row = {"goal_id": r["goal_id"], "goal": r["goal"], "target": r["target"], "suffix": r["suffix"],
               "initial_loss": r["initial_loss"], "best_loss": r["best_loss"], "prompt_loss": r["prompt_loss"],
               "exact": r["exact"], "steps": r["steps"], "seconds": r["seconds"]}
        for v in VARIANTS:
            if refused is not None and v in refused:
                row[f"refused_{v}"] = bool(refused[v][i])
        if replies is not None and "gcg" in replies:
            row["starts_with_target"] = replies["gcg"][i].strip().startswith(r["target"].strip())
            row["reply_gcg"] = replies["gcg"][i]
        rows.append(row)
    return pd.DataFrame(rows)
