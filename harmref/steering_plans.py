"""The steering experiments (rules steer, steer_controls): which prompts, under which settings (§3.4–3.5, Figs 4–5).

An `Arm` is one curve of a figure (± a direction on a token scope), a `Setting` one steering
setting (arm, layer, coefficient, control). `sweep_plan` builds the layer sweep of Fig 4
(`refusal`: accepted harmless prompts) or Fig 5 (`inversion`: reply-inversion prompts),
`controls_plan` the controls at each arm's best layer (coefficient, norm-matched, swapped scope).
`run_plan` generates a plan as one batched sweep (`steering.run_sweep`), `judge_rows` labels its
rows, `execute` does both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .inversion import question_text
from .steering import NONE, Steer, run_sweep
from .steering_tables import best_layers, summarise

log = logging.getLogger(__name__)


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
