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

The experiments built on it (Figs 4–5 and their controls) are `harmref.steering_plans`; the
continuous scores read at the first generated position, `harmref.token_scores`; the summaries and
tables of steered generations, `harmref.steering_tables`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .batching import run_by_length
from .hooks import add_hooks, decoder_layers
from .positions import EncodedBatch, encode

if TYPE_CHECKING:
    from .token_scores import TokenScore

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
