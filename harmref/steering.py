"""Steering while generating: activation addition and directional ablation, one setting per batch row (§3.4–3.5).

A `Steer` is one row's intervention. `RowSteering` turns a batch of them into
per-row tables — layer index [b], addition [b, d], ablation direction [b, d],
prompt mask [b, seq], every-step flag [b] — and hooks every layer some row
needs, so a single `generate` call carries a whole layers × coefficients ×
directions × prompts sweep (rows whose layer is not l get no addition at l).

- Addition: h ← h + c·v^l at the input of decoder layer l (`resid_pre`, the
  paper's pre-hook), on the row's scope of prompt tokens, during the prompt
  pass only (official `max_decode_step_while_intervene=1`) unless `every_step`.
- Ablation: h ← h − (h·r̂) r̂ at the input of every layer and at the output of
  the last (andyrdt/refusal_direction's directional ablation, applied at layer
  boundaries only: the stream inside a layer, between attention and MLP, is not
  touched), on every decoding step by default.

With the KV cache the first call of a layer is the prefill [b, seq, d]; later
calls see the new token only [b, 1, d]. Hooks count the tokens each layer has
seen, so a column is a prompt column iff its absolute position < seq.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import torch

from .batching import run_by_length
from .hooks import add_hooks, decoder_layers
from .positions import EncodedBatch, encode

log = logging.getLogger(__name__)

SCOPES = ("all", "context", "question", "inst", "post")
KINDS = ("none", "actadd", "ablation")


@dataclass(frozen=True, eq=False)
class Steer:
    """One row's intervention.

    kind: none | actadd | ablation. layer: decoder layer whose input gets c·v
    (actadd only). vector: [d]. scope: all | context (before the inversion
    question) | question (question + post-instruction tokens) | inst (t_inst) |
    post (after t_inst) | a tuple of column offsets from t_inst.
    """

    kind: str = "none"
    layer: int = -1
    vector: torch.Tensor | None = None
    coeff: float = 1.0
    scope: str | tuple = "all"
    every_step: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown intervention {self.kind!r} (expected one of {KINDS})")
        if self.kind != "none" and (self.vector is None or self.vector.ndim != 1):
            raise ValueError(f"{self.kind} needs a [d] vector")
        if self.kind == "actadd" and self.layer < 0:
            raise ValueError("actadd needs a layer ≥ 0")
        if isinstance(self.scope, str) and self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r} (expected one of {SCOPES} or a tuple of offsets)")

    @classmethod
    def add(cls, layer: int, vector: torch.Tensor, coeff: float = 1.0, scope="all", unit: bool = False, every_step: bool = False):
        """h ← h + coeff·v at the input of `layer`; `unit` normalises v first."""
        v = vector.detach().float()
        if unit:
            v = v / v.norm()
        return cls("actadd", int(layer), v, float(coeff), _scope(scope), every_step)

    @classmethod
    def ablate(cls, direction: torch.Tensor, scope="all", every_step: bool = True):
        """Remove the component along `direction` at every layer."""
        v = direction.detach().float()
        return cls("ablation", -1, v / v.norm(), 1.0, _scope(scope), every_step)


NONE = Steer()


def _scope(scope):
    return tuple(int(x) for x in scope) if isinstance(scope, (list, tuple)) else scope


def scope_mask(batch: EncodedBatch, scope) -> torch.Tensor:
    """Prompt columns a scope covers, per row: bool [b, seq] (padding never included)."""
    b, seq = batch.input_ids.shape
    cols = torch.arange(seq)[None, :]
    valid = cols >= batch.start[:, None]
    if scope == "all":
        return valid
    if scope == "context":
        return valid & (cols < batch.context_end[:, None])
    if scope == "question":
        return valid & (cols >= batch.context_end[:, None])
    if scope == "inst":
        return cols == batch.inst_pos[:, None]
    if scope == "post":
        return cols > batch.inst_pos[:, None]
    m = torch.zeros(b, seq, dtype=torch.bool)
    for off in scope:
        c = batch.inst_pos + off
        ok = (c >= batch.start) & (c < seq)
        m[torch.arange(b)[ok], c[ok]] = True
    return m


class RowSteering:
    """Per-row intervention tables for one encoded batch, and the hooks that apply them."""

    def __init__(self, batch: EncodedBatch, steers: list[Steer], n_layers: int):
        if len(steers) != batch.input_ids.shape[0]:
            raise ValueError(f"{len(steers)} steers for a batch of {batch.input_ids.shape[0]} rows")
        b, self.prompt_len = batch.input_ids.shape
        self.n_layers = n_layers
        vecs = [s.vector for s in steers if s.vector is not None]
        d = vecs[0].shape[0] if vecs else 0
        self.layer = torch.tensor([s.layer if s.kind == "actadd" else -1 for s in steers])
        if (self.layer >= n_layers).any():
            raise ValueError(f"steering layer {int(self.layer.max())} ≥ the model's {n_layers} layers")
        self.delta = torch.zeros(b, d)
        self.direction = torch.zeros(b, d)
        for i, s in enumerate(steers):
            if s.kind == "actadd":
                self.delta[i] = s.coeff * s.vector
            elif s.kind == "ablation":
                self.direction[i] = s.vector
        self.has_ablation = any(s.kind == "ablation" for s in steers)
        masks = {}
        rows = []
        for s in steers:
            key = s.scope
            if key not in masks:
                masks[key] = scope_mask(batch, key)
            rows.append(key)
        self.prompt_mask = torch.stack([masks[k][i] for i, k in enumerate(rows)]) if steers else torch.zeros(0, 0, dtype=torch.bool)
        active = torch.tensor([s.kind != "none" for s in steers])
        self.prompt_mask &= active[:, None]
        self.every_step = torch.tensor([s.every_step and s.kind != "none" for s in steers])

    def to(self, device, dtype):
        for name in ("delta", "direction"):
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        self.prompt_mask = self.prompt_mask.to(device=device, dtype=dtype)
        self.every_step = self.every_step.to(device=device, dtype=dtype)
        self.layer = self.layer.to(device)
        return self

    def layers(self) -> list[int]:
        """Decoder layers that need a hook."""
        if self.has_ablation:
            return list(range(self.n_layers))
        return sorted({int(x) for x in self.layer.tolist() if x >= 0})

    def _mask(self, start: int, t: int):
        """[b, t] weights for columns start … start+t-1 (absolute), or None when all zero."""
        T = self.prompt_len
        if start >= T:
            if not bool(self.every_step.any()):
                return None
            return self.every_step[:, None].expand(-1, t)
        m = self.prompt_mask[:, start : min(start + t, T)]
        if start + t > T:  # no KV cache: the call also covers generated tokens
            m = torch.cat([m, self.every_step[:, None].expand(-1, start + t - T)], dim=1)
        return m

    def _fn(self, add: torch.Tensor | None, ablate: bool):
        seen = [0]
        local = {}  # this hook's vectors on the device of its layer (layers of a split model live on several)

        def vectors(device):
            if device not in local:
                local[device] = (None if add is None else add.to(device), self.direction.to(device))
            return local[device]

        def fn(h):
            start, t = seen[0], h.shape[1]
            seen[0] += t
            m = self._mask(start, t)
            if m is None:
                return None
            m = m[..., None].to(h.device)
            add_h, direction = vectors(h.device)
            out = h
            if ablate:
                r = direction[:, None, :]
                out = out - m * (out * r).sum(-1, keepdim=True) * r
            if add_h is not None:
                out = out + m * add_h[:, None, :]
            return out

        return fn

    def hooks(self) -> list[tuple]:
        """(site, layer, fn) hooks with fresh token counters: build once per generate call."""
        out = []
        for l in self.layers():
            sel = self.layer == l
            add = self.delta * sel[:, None].to(self.delta.dtype) if bool(sel.any()) else None
            out.append(("resid_pre", l, self._fn(add, self.has_ablation)))
        if self.has_ablation:
            out.append(("resid_post", self.n_layers - 1, self._fn(None, True)))
        return out


@torch.no_grad()
def generate_steered(model, tokenizer, batch: EncodedBatch, steers: list[Steer], max_new_tokens: int):
    """Greedy continuations of one batch, each row under its own Steer.

    Returns (new token ids [b, new] CPU, log-probabilities at the first generated position [b, vocab] float32 CPU).
    """
    from .models import input_device

    device, dtype = input_device(model), next(model.parameters()).dtype
    rs = RowSteering(batch, steers, len(decoder_layers(model))).to(device, dtype)
    b = batch.to(device)
    with add_hooks(model, rs.hooks()), _first_logits(model) as first:
        out = model.generate(
            **b.model_inputs(),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    logprobs = torch.log_softmax(first["logits"].float(), dim=-1).cpu()
    return out[:, b.input_ids.shape[1] :].cpu(), logprobs


@contextlib.contextmanager
def _first_logits(model):
    """Capture the raw logits of the first generated position (output of the LM head on the prefill).

    Raw, before generation-config processors such as a repetition penalty (which would
    bias "Certainly" vs "No": both appear in the question); only this step is kept.
    """
    store: dict = {}

    def hook(module, args, output):
        if "logits" not in store:
            store["logits"] = output[:, -1].detach()

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


# ----------------------------------------------------------------- continuous scores
def first_token_ids(tokenizer, strings) -> tuple[int, ...]:
    """The first token of each string under this tokenizer (deduplicated, in order)."""
    ids = []
    for s in strings:
        enc = tokenizer(s, add_special_tokens=False)["input_ids"]
        if not enc:
            raise ValueError(f"{s!r} tokenizes to nothing")
        if enc[0] not in ids:
            ids.append(enc[0])
    return tuple(ids)


@dataclass(frozen=True)
class TokenScore:
    """Log-odds at the first generated position.

    log P(pos) − log P(neg) (inversion: "Certainly" vs "No"); with `neg=None`,
    log P(pos) − log(1 − P(pos)) (refusal-opening tokens vs the rest, as
    andyrdt/refusal_direction scores refusal). Never invalid.
    """

    name: str
    pos: tuple[int, ...]
    neg: tuple[int, ...] | None = None

    @classmethod
    def from_strings(cls, tokenizer, name: str, pos, neg=None):
        p = first_token_ids(tokenizer, pos)
        n = first_token_ids(tokenizer, neg) if neg is not None else None
        if n is not None and set(p) & set(n):
            raise ValueError(f"{name}: {pos} and {neg} share a first token")
        return cls(name, p, n)

    def __call__(self, logprobs: torch.Tensor) -> torch.Tensor:
        lp = logprobs.double()
        lp_pos = torch.logsumexp(lp[:, list(self.pos)], dim=-1)
        if self.neg is not None:
            return lp_pos - torch.logsumexp(lp[:, list(self.neg)], dim=-1)
        return lp_pos - torch.log(-torch.expm1(lp_pos.clamp(max=-1e-12)))


# ----------------------------------------------------------------------- sweeps
def run_sweep(
    model,
    tokenizer,
    fmt,
    instructions: list[str],
    steers: list[Steer],
    max_new_tokens: int,
    batch_size: int = 64,
    questions: list[str | None] | None = None,
    scores: tuple[TokenScore, ...] = (),
    progress=None,
    keep_ids: bool = False,
) -> list[dict]:
    """Generate every (instruction, question, steer) row; as few `generate` calls as `batch_size` allows.

    Rows are grouped by prompt length (rows of one prompt under different
    settings share a batch); returns, in input order, {"response", score names…}
    (+ "token_ids", the generated ids up to the first end-of-turn, with `keep_ids`).
    """
    n = len(instructions)
    if len(steers) != n:
        raise ValueError(f"{n} instructions but {len(steers)} steers")
    questions = list(questions) if questions is not None else [None] * n

    def one(rows):
        qs = [questions[i] for i in rows]
        batch = encode(tokenizer, fmt, [instructions[i] for i in rows], qs if any(q is not None for q in qs) else None)
        ids, lp = generate_steered(model, tokenizer, batch, [steers[i] for i in rows], max_new_tokens)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        vals = {sc.name: sc(lp).tolist() for sc in scores}
        res = []
        for j in range(len(rows)):
            res.append({"response": texts[j], **{k: v[j] for k, v in vals.items()}})
            if keep_ids:
                res[-1]["token_ids"] = _until_eos(ids[j].tolist(), tokenizer.eos_token_id)
        return res

    lengths = [len(fmt.render(x, q)[0]) for x, q in zip(instructions, questions)]
    return run_by_length(one, lengths, batch_size, "steering batch", progress)


def _until_eos(ids: list[int], eos) -> list[int]:
    eos = set(eos) if isinstance(eos, (list, tuple)) else {eos}
    for k, t in enumerate(ids):
        if t in eos:
            return ids[: k + 1]
    return ids


# ------------------------------------------------------------ experiment plans
@dataclass(frozen=True)
class Arm:
    """One curve of a steering figure: ± a direction on a token scope."""

    direction: str
    sign: int = 1
    scope: str = "all"

    @property
    def name(self) -> str:
        return f"{'+' if self.sign > 0 else '-'}{self.direction}@{self.scope}"

    @classmethod
    def parse(cls, spec: dict):
        return cls(spec["direction"], int(spec.get("sign", 1)), spec.get("scope", "all"))


@dataclass(frozen=True)
class Setting:
    """Metadata of one steering setting (JSON-able); `make_steer` resolves it against the directions."""

    arm: str = "baseline"
    direction: str | None = None
    sign: int = 0
    scope: str | None = None
    layer: int | None = None
    coeff: float = 0.0
    control: str = "baseline"
    rescale_to: str | None = None

    def record(self) -> dict:
        return {k: getattr(self, k) for k in ("arm", "direction", "sign", "scope", "layer", "coeff", "control", "rescale_to")}


BASELINE = Setting()


def layer_sweep(arms: list[Arm], layers: list[int], coeff: float = 1.0) -> list[Setting]:
    """The baseline plus every arm at every layer (Figs 4–5)."""
    out = [BASELINE]
    for arm in arms:
        out += [Setting(arm.name, arm.direction, arm.sign, arm.scope, int(l), float(coeff), "layer_sweep") for l in layers]
    return out


def make_steer(setting: Setting, directions: dict[str, torch.Tensor], unit: bool = False, every_step: bool = False) -> tuple[Steer, float]:
    """The Steer for a setting and the norm of what it adds (‖c·v‖). directions: name → [L+1, d]."""
    if setting.direction is None:
        return NONE, 0.0
    v = directions[setting.direction][setting.layer].float()
    if setting.rescale_to is not None:
        v = v * (directions[setting.rescale_to][setting.layer].float().norm() / v.norm())
    c = setting.sign * setting.coeff
    steer = Steer.add(setting.layer, v, c, setting.scope, unit=unit, every_step=every_step)
    return steer, float(abs(c) * (1.0 if unit else v.norm()))


def sweep_layers(n_layers: int, layers=None, start: int = 0, stride: int = 1) -> list[int]:
    """Steered layers: an explicit list, or start, start+stride, … < n_layers."""
    if layers:
        bad = [l for l in layers if not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"steering layers {bad} outside 0 … {n_layers - 1}")
        return sorted(set(int(l) for l in layers))
    return list(range(start, n_layers, stride))


def run_plan(model, tokenizer, fmt, plan: list[tuple[list[dict], list[Setting]]], directions, *,
             max_new_tokens: int, batch_size: int, unit: bool = False, every_step: bool = False,
             scores=(), progress=None) -> list[dict]:
    """Every prompt of each group under every setting of that group, as one batched sweep.

    plan: [(prompts, settings)]; a prompt is a dict with `prompt` (and optional
    `question`, `question_id`, `set`, `id`). Returns one row per (setting, prompt):
    prompt fields, setting fields, `norm` (‖c·v‖), `response`, scores.
    """
    meta, instructions, questions, steers = [], [], [], []
    for prompts, settings in plan:
        for s in settings:
            steer, norm = make_steer(s, directions, unit, every_step)
            if steer.vector is not None and not bool(torch.isfinite(steer.vector).all()):
                log.warning("skipping %s (%s) at layer %s: the %s direction is not finite there (too few "
                            "prompts in a behaviour group?)", s.arm, s.control, s.layer, s.rescale_to or s.direction)
                continue
            for p in prompts:
                meta.append({**{k: v for k, v in p.items() if not k.startswith("_")}, **s.record(), "norm": norm})
                instructions.append(p["prompt"])
                questions.append(p.get("question"))
                steers.append(steer)
    log.info("steering sweep: %d rows (%d settings)", len(meta), sum(len(s) for _, s in plan))
    res = run_sweep(model, tokenizer, fmt, instructions, steers, max_new_tokens, batch_size,
                    questions if any(q is not None for q in questions) else None, tuple(scores), progress)
    return [{**m, **r} for m, r in zip(meta, res)]


def refusal_prompts(generations: list[dict], set_name: str, n: int, only_accepted: bool = True) -> list[dict]:
    """The first n accepted prompts of a set's chat generations (Fig 4 steers accepted-harmless prompts).

    `only_accepted=False` takes the first n prompts whatever the model did (for models that refuse everything).
    A prompt whose verdict is invalid (`refused` null: the LLM judge gave no verdict) is not "accepted".
    """
    rows = [r for r in generations if not only_accepted or r["refused"] is False][:n]
    return [{"experiment": "refusal", "set": set_name, "question_id": None, "id": r["id"], "prompt": r["prompt"],
             "refused_unsteered": None if r["refused"] is None else bool(r["refused"])} for r in rows]


def question_text(q) -> tuple[str, str]:
    """(question_id, text): an int indexes the paper's questions (Q0–Q2), a string is used as given."""
    from .inversion import QUESTIONS

    if isinstance(q, int):
        return f"Q{q}", QUESTIONS[q]
    return f"custom:{q[:24]}", q


def inversion_prompts(records: list[dict], set_name: str, questions, n: int) -> list[dict]:
    """The first n prompts of a set, each wrapped with every inversion question."""
    out = []
    for q in questions:
        qid, text = question_text(q)
        out += [{"experiment": "inversion", "set": set_name, "question_id": qid, "question": text,
                 "id": r["id"], "label": r["label"], "prompt": r["prompt"]} for r in records[:n]]
    return out


def prompts_of(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Distinct prompts of a sweep's baseline rows, grouped by set: [(set, prompts)] (for the controls)."""
    keep = ("experiment", "set", "question_id", "question", "id", "label", "prompt")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["control"] == "baseline":
            groups.setdefault(r["set"], []).append({k: r[k] for k in keep if k in r})
    return list(groups.items())


def judge_rows(rows: list[dict], llm_judge=None) -> list[dict]:
    """Refusal rows get `refused` (substring judge), inversion rows `answer` (harmful | harmless | invalid).

    `llm_judge` (e.g. `judging.OllamaJudge`) adds `refused_llm` (True, False, or None: invalid) to the refusal rows.
    """
    from .judging import SubstringJudge, parse_inversion

    sub = SubstringJudge()
    out = [{**r, "answer": parse_inversion(r["response"])} if r["experiment"] == "inversion"
           else {**r, "refused": sub.refused(r["response"])} for r in rows]
    if llm_judge is not None:
        idx = [i for i, r in enumerate(out) if r["experiment"] == "refusal"]
        labels = llm_judge([out[i]["prompt"] for i in idx], [out[i]["response"] for i in idx])
        for i, x in zip(idx, labels):
            out[i]["refused_llm"] = None if x is None else bool(x)
            out[i]["llm_judge"] = getattr(llm_judge, "name", "llm")
    return out


# -------------------------------------------------------------------- summaries
GROUP = ["experiment", "set", "question_id", "arm", "control", "layer", "coeff", "rescale_to"]


def summarise(rows: list[dict]):
    """One row per cell: n, the rate the figure plots, invalid share, mean continuous score.

    refusal: rate = refused share (substring), score = refusal log-odds.
    inversion: rate = "No" share among valid answers (invalid dropped, as the paper),
    certainly = "Certainly" share among valid, refusal_text = share of replies that are
    refusals (substring judge), score = log P(Certainly) − log P(No).
    """
    import pandas as pd

    from .judging import SubstringJudge

    sub = SubstringJudge()
    if not rows:
        return pd.DataFrame(columns=[*GROUP, "norm", "n", "n_valid", "rate", "invalid", "se", "score", "score_se",
                                     "baseline_rate", "baseline_score"])
    df = pd.DataFrame(rows)
    for col in GROUP:
        if col not in df:
            df[col] = None
    df = df.astype({c: object for c in GROUP}).where(df.notna(), None)
    out = []
    for key, g in df.groupby(GROUP, dropna=False, sort=False):
        row = dict(zip(GROUP, key))
        row["norm"] = float(g["norm"].iloc[0])
        row["n"] = len(g)
        if row["experiment"] == "inversion":
            valid = g[g["answer"] != "invalid"]
            row["n_valid"] = len(valid)
            row["rate"] = float((valid["answer"] == "harmless").mean()) if len(valid) else float("nan")
            row["certainly"] = float((valid["answer"] == "harmful").mean()) if len(valid) else float("nan")
            row["invalid"] = 1 - len(valid) / len(g)
            # replies that are refusals (substring judge): the official parser reads most of them as "No"
            # ("I cannot…", "I will not…" contain "no"), so a refusal can masquerade as a harmless verdict
            row["refusal_text"] = float(g["response"].map(sub.refused).mean())
            sc = g["inversion_margin"]
        else:
            row["n_valid"] = len(g)
            row["rate"] = float(g["refused"].mean())
            row["invalid"] = 0.0
            if "llm_judge" in g and g["llm_judge"].notna().all():  # rate over the LLM's valid verdicts, invalid counted
                llm = g["refused_llm"].dropna()
                row["rate_llm"] = float(llm.astype(bool).mean()) if len(llm) else float("nan")
                row["invalid_llm"] = int(len(g) - len(llm))
            sc = g["refusal_score"]
        row["se"] = math.sqrt(row["rate"] * (1 - row["rate"]) / row["n_valid"]) if row["n_valid"] else float("nan")
        row["score"] = float(sc.mean())
        row["score_se"] = float(sc.std(ddof=1) / math.sqrt(len(sc))) if len(sc) > 1 else float("nan")
        out.append(row)
    summary = pd.DataFrame(out)
    base = summary[summary["arm"] == "baseline"].set_index(["experiment", "set", "question_id"])
    keys = list(zip(summary["experiment"], summary["set"], summary["question_id"]))
    summary["baseline_rate"] = [base["rate"].get(k, float("nan")) for k in keys]
    summary["baseline_score"] = [base["score"].get(k, float("nan")) for k in keys]
    return summary


def best_layers(summary, min_valid: float = 0.5) -> dict:
    """Per (experiment, set, arm) of the layer sweep: the layer with the largest |rate − baseline|.

    Effects are averaged over inversion questions; cells with fewer than `min_valid`
    valid answers count as no effect; ties go to the larger |score − baseline|.
    """
    sweep = summary[summary["control"] == "layer_sweep"].copy()
    ok = sweep["n_valid"] >= min_valid * sweep["n"]
    sweep["effect"] = ((sweep["rate"] - sweep["baseline_rate"]).abs().fillna(0) * ok
                       + 1e-6 * (sweep["score"] - sweep["baseline_score"]).abs().fillna(0))
    eff = sweep.groupby(["experiment", "set", "arm", "layer"], sort=False)["effect"].mean().reset_index()
    out = {}
    for key, g in eff.groupby(["experiment", "set", "arm"], sort=False):
        out[key] = int(g.loc[g["effect"].idxmax(), "layer"])
    return out


OTHER = {"harmfulness": "refusal", "refusal": "harmfulness"}
SWAP_SCOPE = {"context": "all", "all": "context"}


def control_settings(arms: list[Arm], layers: dict[str, list[int]], coefficients, coeff: float = 1.0,
                     other: dict[str, str] | None = OTHER, swap_scope: dict[str, str] | None = SWAP_SCOPE) -> list[Setting]:
    """The controls a careful reader asks for, at each arm's layers (usually its best one).

    coefficient: c·v for c in `coefficients` (except the sweep's own `coeff`, already run);
    norm_matched: coeff·v with v rescaled to the other direction's norm at that layer;
    scope_swap: coeff·v added on the other direction's token scope.
    """
    out = []
    for arm in arms:
        for l in layers.get(arm.name, []):
            base = dict(arm=arm.name, direction=arm.direction, sign=arm.sign, scope=arm.scope, layer=int(l))
            out += [Setting(**base, coeff=float(c), control="coefficient") for c in coefficients if c != coeff]
            if other and arm.direction in other:
                out.append(Setting(**base, coeff=float(coeff), control="norm_matched", rescale_to=other[arm.direction]))
            if swap_scope and arm.scope in swap_scope:
                out.append(Setting(**{**base, "scope": swap_scope[arm.scope]}, coeff=float(coeff), control="scope_swap"))
    return out


# ------------------------------------------------------------------ experiments
def default_scores(tokenizer, refusal_tokens, answer_tokens: dict) -> tuple[TokenScore, TokenScore]:
    """The refusal log-odds and the inversion margin log P(Certainly) − log P(No), for this tokenizer."""
    return (TokenScore.from_strings(tokenizer, "refusal_score", refusal_tokens),
            TokenScore.from_strings(tokenizer, "inversion_margin", answer_tokens["harmful"], answer_tokens["harmless"]))


def sweep_plan(experiment: str, params: dict, n_layers: int, records: dict[str, list[dict]]) -> list[tuple[list[dict], list[Setting]]]:
    """The layer-sweep plan of Fig 4 (`refusal`) or Fig 5 (`inversion`) from the `steering` config.

    records: set name → chat generations (refusal) or prompt records (inversion).
    """
    layers = sweep_layers(n_layers, params["layers"], params["layer_start"], params["layer_stride"])
    c = params["coefficient"]
    if experiment == "refusal":
        cfg = params["refusal"]
        prompts = refusal_prompts(records[cfg["set"]], cfg["set"], params["n_prompts"], cfg["only_accepted"])
        if len(prompts) < params["n_prompts"]:
            log.warning("only %d accepted prompts in %s (wanted %d)", len(prompts), cfg["set"], params["n_prompts"])
        return [(prompts, layer_sweep([Arm.parse(a) for a in cfg["arms"]], layers, c))]
    cfg = params["inversion"]
    return [
        (inversion_prompts(records[cfg[f"{kind}_set"]], cfg[f"{kind}_set"], cfg["questions"], params["n_prompts"]),
         layer_sweep([Arm.parse(a) for a in cfg[f"{kind}_arms"]], layers, c))
        for kind in ("harmless", "harmful")
    ]


def controls_plan(experiment: str, params: dict, sweep_rows: list[dict]) -> list[tuple[list[dict], list[Setting]]]:
    """Controls for one experiment at each arm's best layer of its sweep (or the configured layers)."""
    cfg, ctl = params[experiment], params["controls"]
    best = best_layers(summarise(sweep_rows))
    plan = []
    for set_name, prompts in prompts_of(sweep_rows):
        if experiment == "refusal":
            arms = cfg["arms"]
        else:
            arms = cfg["harmless_arms"] if set_name == cfg["harmless_set"] else cfg["harmful_arms"]
        arms = [Arm.parse(a) for a in arms]
        layers = {a.name: ctl["layers"] or [best[(experiment, set_name, a.name)]] for a in arms
                  if ctl["layers"] or (experiment, set_name, a.name) in best}
        settings = control_settings(
            arms, layers, ctl["coefficients"], params["coefficient"],
            other=OTHER if ctl["norm_matched"] else None,
            swap_scope=SWAP_SCOPE if ctl["scope_swap"] and experiment == "inversion" else None,
        )
        plan.append((prompts, settings))
    return plan


def execute(model, tokenizer, fmt, plan, directions, *, max_new_tokens: int, batch_size: int, scores,
            unit: bool = False, every_step: bool = False, llm_judge=None, progress=None) -> list[dict]:
    """Run a plan (`run_plan`) and judge its rows (`judge_rows`; `llm_judge`, e.g. a checked
    `judging.OllamaJudge`, adds `refused_llm` to the refusal rows)."""
    rows = run_plan(model, tokenizer, fmt, plan, directions, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    unit=unit, every_step=every_step, scores=scores, progress=progress)
    return judge_rows(rows, llm_judge)


def report_tables(summary, model: str) -> dict:
    """Fig 4, Fig 5 and controls tables (rates in %) from `summarise` over sweeps + controls.

    Controls carry `reference_%`: the same arm at the same layer in the layer sweep.
    """
    s = summary.copy()
    s.insert(0, "model", model)
    s["layer"] = s["layer"].astype("Int64")
    for col in ("rate", "certainly", "invalid", "refusal_text", "baseline_rate", "se", "rate_llm"):
        if col in s:
            s[col] = 100 * s[col]
    s = s.rename(columns={"rate": "rate_%", "certainly": "certainly_%", "invalid": "invalid_%", "se": "se_%",
                          "refusal_text": "refusal_text_%", "baseline_rate": "baseline_%", "rate_llm": "rate_llm_%"})
    s["delta_%"] = s["rate_%"] - s["baseline_%"]
    sweep = s[s["control"].isin(["baseline", "layer_sweep"])]
    fig4 = sweep[sweep["experiment"] == "refusal"].drop(
        columns=["question_id", "certainly_%", "invalid_%", "refusal_text_%", "n_valid", "rescale_to"], errors="ignore")
    fig5 = sweep[sweep["experiment"] == "inversion"].drop(
        columns=["rate_llm_%", "invalid_llm", "rescale_to"], errors="ignore").rename(columns={"rate_%": "no_%"})
    ctl = s[~s["control"].isin(["baseline", "layer_sweep"])].copy()
    ref = sweep.set_index(["experiment", "set", "question_id", "arm", "layer"])
    keys = list(zip(ctl["experiment"], ctl["set"], ctl["question_id"], ctl["arm"], ctl["layer"]))
    ctl["reference_coeff"] = [ref["coeff"].get(k, float("nan")) for k in keys]
    ctl["reference_%"] = [ref["rate_%"].get(k, float("nan")) for k in keys]
    if "rate_llm_%" in s and s["rate_llm_%"].isna().all() and "invalid_llm" not in s:  # no LLM judge ran
        fig4, ctl = fig4.drop(columns="rate_llm_%"), ctl.drop(columns="rate_llm_%")
    return {"fig4": fig4, "fig5": fig5, "controls": ctl}
