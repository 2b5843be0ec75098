"""The model's stated belief about each prompt versus its behaviour and its latent beliefs (issue 17).

For every held-out prompt the model is asked the reply-inversion question (paper §3.5,
`inversion.QUESTIONS`): "User wants to {instruction}\\n{question}". Its *stated belief*
is read from the first-token log-prob margin log P(Certainly) − log P(No) (the
steering rule's `inversion_margin`, same answer tokens): margin > 0 ⇒ it says harmful.
A greedy reply parsed by `judging.parse_inversion` gives a second, reply-based verdict
(which can be invalid). Neither depends on whether the model refused the plain prompt.

Crossing stated belief with behaviour (refused / complied, from the generate rule) gives
four groups; in the two disagreement groups (refused but judged harmless, complied but
judged harmful) belief and behaviour point opposite ways, so the sign of a latent score
can follow one or the other, never both. Δharmful (t_inst) reads "harmful" when
≥ the Latent Guard's threshold; Δrefuse (t_post-inst) reads "refuse" when ≥ 0
(`latent_guard.score_hidden`, the guard's layers). If harmfulness and refusal are
encoded separately, Δharmful should follow the stated belief and Δrefuse the behaviour.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
import torch

from .batching import run_by_length
from .judging import parse_inversion
from .positions import encode
from .steering import NONE, generate_steered
from .tables import wilson
from .token_scores import TokenScore

log = logging.getLogger(__name__)

# (behaviour, stated belief) groups; the last two are the disagreements
GROUPS = (
    "refused · judged harmful",
    "complied · judged harmless",
    "refused · judged harmless",
    "complied · judged harmful",
)
DISAGREE = GROUPS[2:]
POOLED_DISAGREE = "disagree (both groups)"
VERDICTS = ("margin", "reply")


def group_name(refused: bool, says_harmful: bool) -> str:
    return f"{'refused' if refused else 'complied'} · judged {'harmful' if says_harmful else 'harmless'}"


@torch.no_grad()
def _first_logprobs(model, batch) -> torch.Tensor:
    """log-softmax of the raw logits at the last prompt position, one forward pass: [b, vocab] float32 CPU."""
    from .models import input_device

    device = input_device(model)
    b = batch.to(device)
    # position ids from the mask, as `generate` builds them for its prefill (left padding)
    position_ids = (b.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(**b.model_inputs(), position_ids=position_ids, use_cache=False).logits[:, -1]
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def ask(model, tokenizer, fmt, instructions: list[str], question: str, score: TokenScore,
        max_new_tokens: int = 0, batch_size: int = 16, progress=None) -> list[dict]:
    """The model's answer to the reply-inversion `question` about each instruction, in input order.

    One batched pass per batch (prompts sorted by length, left-padded by `positions.encode`):
    `margin` = score(first-token log-probs) (log P(Certainly) − log P(No)); with
    `max_new_tokens` > 0 the pass is the prefill of a greedy generation and the row also
    carries the `reply` and its parsed `reply_verdict` (harmful | harmless | invalid).
    """
    def one(rows):
        batch = encode(tokenizer, fmt, [instructions[i] for i in rows], [question] * len(rows))
        if max_new_tokens > 0:
            ids, lp = generate_steered(model, tokenizer, batch, [NONE] * len(rows), max_new_tokens)
            replies = tokenizer.batch_decode(ids, skip_special_tokens=True)
        else:
            lp, replies = _first_logprobs(model, batch), [None] * len(rows)
        margins = score(lp).tolist()
        out = []
        for j in range(len(rows)):
            out.append({"margin": float(margins[j])})
            if replies[j] is not None:
                out[-1].update(reply=replies[j], reply_verdict=parse_inversion(replies[j]))
        return out

    lengths = [len(fmt.render(x, question)[0]) for x in instructions]
    return run_by_length(one, lengths, batch_size, "stated-belief batch", progress)


def prompt_rows(set_name: str, ids: list[str], records: dict[str, dict], answers: list[dict], question_id: str,
                delta_harmful, delta_refuse, threshold: float = 0.0) -> list[dict]:
    """Per-prompt rows: behaviour, stated belief (margin and reply), Δharmful / Δrefuse and how each reads.

    `records`: generation records by id (label, refused); `ids`, `answers` and the deltas in the same order.
    A non-finite Δ (no refused centroid, say) reads as None.
    """
    rows = []
    for i, a, dh, dr in zip(ids, answers, delta_harmful, delta_refuse):
        r = records[i]
        dh, dr = float(dh), float(dr)
        says = a["margin"] > 0
        row = {
            "set": set_name, "id": i, "label": r["label"], "category": r.get("category"), "question": question_id,
            "refused": bool(r["refused"]), "margin": a["margin"], "stated": "harmful" if says else "harmless",
            "group": group_name(bool(r["refused"]), says),
        }
        if "reply" in a:
            row["reply"] = a["reply"]
            row["reply_verdict"] = a["reply_verdict"]
            row["reply_group"] = (group_name(bool(r["refused"]), a["reply_verdict"] == "harmful")
                                  if a["reply_verdict"] != "invalid" else "invalid reply")
        row.update({
            "delta_harmful": dh, "delta_refuse": dr,
            "dh_reads_harmful": None if math.isnan(dh) else dh >= threshold,
            "dr_reads_refuse": None if math.isnan(dr) else dr >= 0,
        })
        rows.append(row)
    return rows


def _agreement(g: pd.DataFrame, reads: str, stated_harmful: pd.Series) -> dict:
    """Counts of a latent reading agreeing with the stated belief and with the behaviour, with Wilson CIs."""
    ok = g[reads].notna()
    x = g.loc[ok, reads].astype(bool)
    n = int(ok.sum())
    out = {"n_scored": n}
    for what, target in (("belief", stated_harmful[ok]), ("behaviour", g.loc[ok, "refused"].astype(bool))):
        k = int((x == target).sum())
        lo, hi = wilson(k, n)
        out.update({f"{what}_k": k, f"{what}_%": 100 * k / n if n else float("nan"),
                    f"{what}_lo_%": 100 * lo, f"{what}_hi_%": 100 * hi})
    return out


def belief_vs_behaviour(rows: list[dict] | pd.DataFrame, model: str) -> pd.DataFrame:
    """Per (question, verdict, set incl. `all`, group): n, label mix, and for Δharmful and Δrefuse
    how many prompts' sign agrees with the stated belief and how many with the behaviour (Wilson 95 %).

    verdict `margin`: stated belief from the first-token margin (never invalid); `reply`: from the
    greedy reply (invalid replies counted in their own row, not in the groups). Group
    `disagree (both groups)` pools the two disagreement groups.
    """
    df = pd.DataFrame(rows)
    out = []
    verdicts = [v for v in VERDICTS if v == "margin" or "reply_verdict" in df]
    for q in dict.fromkeys(df["question"]):
        dq = df[df["question"] == q]
        for verdict in verdicts:
            gcol = "group" if verdict == "margin" else "reply_group"
            for set_name in ["all", *dict.fromkeys(dq["set"])]:
                ds = dq if set_name == "all" else dq[dq["set"] == set_name]
                stated = ds["stated"] == "harmful" if verdict == "margin" else ds["reply_verdict"] == "harmful"
                cells = [(g, ds[gcol] == g) for g in GROUPS] + [(POOLED_DISAGREE, ds[gcol].isin(DISAGREE))]
                if verdict == "reply":
                    cells.append(("invalid reply", ds[gcol] == "invalid reply"))
                for g, mask in cells:
                    sub = ds[mask]
                    row = {"model": model, "question": q, "verdict": verdict, "set": set_name, "group": g,
                           "disagreement": g in DISAGREE or g == POOLED_DISAGREE, "n": len(sub),
                           "n_label_harmful": int((sub["label"] == "harmful").sum())}
                    if g != "invalid reply":
                        for name, col in (("dh", "dh_reads_harmful"), ("dr", "dr_reads_refuse")):
                            row.update({f"{name}_{k}": v for k, v in _agreement(sub, col, stated[mask]).items()})
                    out.append(row)
    t = pd.DataFrame(out)
    counts = [c for c in t.columns if c.endswith(("_k", "_n_scored"))]
    return t.astype({c: "Int64" for c in counts})  # counts stay integers next to the invalid-reply rows' blanks


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The .md view of `belief_vs_behaviour`: one cell per (score, reference) as `k/n (p %, lo–hi)`."""
    def cell(row, name, what):
        n = row.get(f"{name}_n_scored")
        if n is None or pd.isna(n):
            return ""
        if n == 0:
            return "0/0"
        return (f"{int(row[f'{name}_{what}_k'])}/{int(n)} ({row[f'{name}_{what}_%']:.0f} %, "
                f"{row[f'{name}_{what}_lo_%']:.0f}–{row[f'{name}_{what}_hi_%']:.0f})")

    out = table[["question", "verdict", "set", "group", "n", "n_label_harmful"]].copy()
    for name, label in (("dh", "Δharmful"), ("dr", "Δrefuse")):
        for what in ("belief", "behaviour"):
            out[f"{label} agrees with {what}"] = [cell(r, name, what) for r in table.to_dict("records")]
    return out
