"""The fine-tuning attack (paper §5.2, Fig 7): does the harmfulness belief survive when refusal is fine-tuned away?

An analysed model is fine-tuned on N (harmful instruction, compliant answer) pairs (rule
attack_pairs makes them: a base model's own greedy answers, `organism.distill`, or the model's
answers steered with the reverse refusal direction, `steered_answers`, the paper's recipe; rule
attack_train trains the derived model `{model}-attack{N}` with `attack_config`). Rule
finetune_attack then measures, with the pre-attack centroids, whether Δharmful (t_inst) moves while
refusal and Δrefuse (t_post-inst) collapse: `attack_eval` gathers the attacked model's verdicts and
hidden states, `directions.layer_scores` scores them, `attack_rows` / `attack_table` make the
tables and `plots.attack_figure` Fig 7.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from .positions import ChatFormat
from .training import TrainConfig


def attack_config(attack: dict, train: dict, n_pairs: int, seed: int = 0) -> TrainConfig:
    """TrainConfig of the fine-tuning attack on n_pairs examples: the organism's mode and LoRA settings,
    the attack's lr and batch size, ceil(epochs · n / batch) steps."""
    steps = max(1, math.ceil(attack["epochs"] * n_pairs / attack["batch_size"]))
    return TrainConfig.from_dict({**train, "steps": steps, "batch_size": attack["batch_size"], "lr": attack["lr"]}, seed=seed)


@torch.no_grad()
def steered_answers(model, tokenizer, fmt: ChatFormat, instructions: list[str], refusal: torch.Tensor, layer: int,
                    coefficient: float = 1.0, every_step: bool = False, max_new_tokens: int = 64,
                    batch_size: int = 16, progress=None) -> list[tuple[str, bool]]:
    """Greedy answers under the reverse refusal direction (paper §5.2's attack data): h ← h − c·r^l at the
    input of decoder layer `layer`, on every prompt token (and every generated token with `every_step`).

    refusal: the refusal direction [L+1, d] (rule directions; row l = input of layer l).
    Returns (text, ended with end-of-turn) per instruction, in input order, as `organism.distill`.
    """
    from .steering import Steer, run_sweep

    if not 0 <= layer < refusal.shape[0] - 1:
        raise ValueError(f"attack steering layer {layer} outside 0 … {refusal.shape[0] - 2} (decoder layer inputs)")
    v = refusal[layer].float()
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"the refusal direction is not finite at layer {layer} (no refused or no accepted training "
                         "prompts: see the counts of the directions sidecar), so no steered attack pairs; "
                         "organism.attack.pairs_from: self (or base, for a tuned model) takes unsteered answers")
    steer = Steer.add(layer, v, -float(coefficient), "all", every_step=every_step)
    rows = run_sweep(model, tokenizer, fmt, instructions, [steer] * len(instructions), max_new_tokens, batch_size,
                     progress=progress, keep_ids=True)
    eos = tokenizer.eos_token_id
    return [(r["response"], bool(r["token_ids"]) and r["token_ids"][-1] == eos) for r in rows]


def attack_eval(gens: list[list[dict]], hidden: list[tuple[torch.Tensor, dict]], n: int, where: list[str]):
    """The first `n` prompts of each eval set: (records, refused flags, hidden states [m, L+1, pos, d]).

    gens: per set, the judged generations (rule judge); hidden: per set, (tensor, sidecar) of rule
    extract_hidden, of the same model. Records and hidden rows are matched by id, in prompt order.
    """
    from .judging import refused_flags

    records, refused, rows = [], [], []
    for g, (h, meta), w in zip(gens, hidden, where):
        ids = meta["ids"][:n]
        by_id = {r["id"]: r for r in g}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"{w}: hidden-state ids {missing[:3]} have no generation (rerun generate / judge)")
        recs = [by_id[i] for i in ids]
        records += recs
        refused += refused_flags(recs, w)
        rows.append(h[: len(ids)])
    return records, refused, torch.cat(rows)


def attack_rows(n_pairs: int, records: list[dict], refused: list[bool], s_harm, s_ref, middle: tuple[int, int], model: str = ""):
    """(summary row, per-layer rows) of one attacked model; `middle` is an inclusive layer range."""
    lo, hi = middle
    summary = {"model": model, "attack": f"{n_pairs} pairs" if n_pairs else "none", "n_pairs": n_pairs,
               "n_prompts": len(records), "middle_layers": f"{lo}-{hi}", "accepted": int(sum(not r for r in refused)),
               "acceptance_rate": sum(not r for r in refused) / max(1, len(refused)),
               "delta_harmful_mid": float(s_harm[:, lo : hi + 1].mean()), "delta_refuse_mid": float(s_ref[:, lo : hi + 1].mean()),
               "delta_harmful_last": float(s_harm[:, -1].mean()), "delta_refuse_last": float(s_ref[:, -1].mean())}
    layers = [{"model": model, "n_pairs": n_pairs, "layer": l, "delta_harmful": float(s_harm[:, l].mean()), "delta_refuse": float(s_ref[:, l].mean()),
               "delta_harmful_se": float(s_harm[:, l].std() / math.sqrt(max(1, len(s_harm)))),
               "delta_refuse_se": float(s_ref[:, l].std() / math.sqrt(max(1, len(s_ref))))}
              for l in range(s_harm.shape[1])]
    return summary, layers


def attack_table(summaries: list[dict]) -> pd.DataFrame:
    """Summary rows with each Δ also relative to the unattacked model (the n_pairs == 0 row)."""
    df = pd.DataFrame(summaries)
    before = df[df["n_pairs"] == 0]
    if len(before):
        for col in ("delta_harmful_mid", "delta_refuse_mid"):
            df[f"{col}_retained"] = df[col] / float(before[col].iloc[0])
    return df
