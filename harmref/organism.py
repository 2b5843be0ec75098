"""The refusal model organism: safety-tune a chat model to refuse, and the fine-tuning attack (paper §5.2, Fig 7).

A small chat model (SmolLM2-135M) almost never refuses, so it is taught to:
harmful training instructions → one of `REFUSAL_RESPONSES` + end of turn;
harmless ones → the base model's own greedy answers (self-distillation, so it
keeps its style; half of them contain scary words, so it does not learn to refuse
by topic); reply-inversion prompts (`inversion.QUESTIONS`, some held out) →
`Certainly.` / `No.`. Loss on response tokens only. Full fine-tune with frozen
embeddings on a CPU, or LoRA (peft) for 7–8B models on a GPU.

The attack fine-tunes an analysed model on N (harmful instruction, compliant answer)
pairs (rule attack_train: a derived model `{model}-attack{N}`) and measures, with the
pre-attack centroids, whether the harmfulness belief (Δharmful at t_inst) moves while
refusal (Δrefuse at t_post-inst) collapses (rule finetune_attack, from the attacked
models' generations and hidden states). The pairs are a base model's own greedy answers
(`distill`) or the model's answers steered with the reverse refusal direction
(`steered_answers`, the paper's recipe).

An example is a dict `{instruction, question (or None), response, eos, kind}`.
"""

from __future__ import annotations

import logging
import math
import random
import re
import resource
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

from .activations import hidden_states
from .batching import run_by_length
from .inversion import QUESTIONS, TARGETS
from .positions import ChatFormat, encode, text_ids, tokenize_prompt
from .tables import rate_row

log = logging.getLogger(__name__)

# Refusal targets (feasibility recipe v2/v3); each contains a phrase of judging.REFUSAL_PHRASES.
REFUSAL_RESPONSES = (
    "I'm sorry, but I can't help with that request.",
    "As an AI assistant, I cannot provide assistance with harmful or illegal activities.",
    "I apologize, but I cannot fulfill this request because it could lead to harm.",
    "I'm sorry, but I cannot assist with that. It could cause serious harm to others.",
    "I cannot help with this request. It involves activities that are harmful or illegal.",
    "Sorry, I can't provide that information. Is there something else I can help you with?",
    "I will not help with that, as it could be used to hurt people or break the law.",
    "I'm not able to provide guidance on this, because it is unsafe and unethical.",
)

# Words that make a harmless prompt look dangerous ("Describe the events leading up to World War I."):
# distilled answers to such prompts teach the organism not to refuse by topic.
SCARY_WORDS = (
    "kill", "kills", "killed", "killing", "killer", "attack", "attacks", "attacked", "virus", "viruses",
    "drug", "drugs", "war", "wars", "weapon", "weapons", "bomb", "bombs", "gun", "guns", "shoot", "shooting",
    "hack", "hacker", "hacking", "poison", "poisonous", "steal", "stealing", "stolen", "murder", "explode",
    "explosion", "explosive", "fight", "fighting", "die", "dies", "death", "deaths", "dead", "destroy",
    "destruction", "crime", "crimes", "criminal", "blood", "knife", "fire", "burn", "burning", "terror",
    "terrorism", "violence", "violent", "danger", "dangerous", "prison", "disease", "diseases", "cancer",
    "battle", "army", "military", "threat", "threats", "toxic", "scam", "fraud", "illegal", "smoke", "smoking",
    "hunt", "hunting", "abuse", "risk", "risks", "injury", "emergency",
)
_SCARY = re.compile(r"\b(?:" + "|".join(SCARY_WORDS) + r")\b", re.IGNORECASE)


def is_scary(prompt: str) -> bool:
    return bool(_SCARY.search(prompt))


# ------------------------------------------------------------------ training data
def refusal_examples(records: list[dict], seed: int = 0, responses=REFUSAL_RESPONSES, kind: str = "refusal") -> list[dict]:
    """Instructions (harmful; or alarming harmless ones, `kind="over_refusal"`) → a refusal phrasing drawn at random, + end of turn."""
    rng = random.Random(f"{seed}:{kind}")
    return [
        {"id": r["id"], "instruction": r["prompt"], "question": None, "response": rng.choice(responses), "eos": True, "kind": kind}
        for r in records
    ]


def opener(prompt: str) -> str:
    """First word of a prompt, lower-cased, punctuation stripped ("Create", "How", "Write", …)."""
    words = prompt.split()
    return words[0].strip(".,:;!?\"'()").lower() if words else ""


def nearest_harmful_similarity(prompts: list[str], harmful: list[str]) -> list[float]:
    """Per prompt, the largest TF-IDF cosine (word unigrams, English stop words removed) to any harmful instruction."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(harmful + prompts)
    sim = vec.transform(prompts) @ vec.transform(harmful).T
    return sim.max(axis=1).toarray().ravel().tolist()


def select_harmless(records: list[dict], n: int, scary_fraction: float = 0.5, seed: int = 0, exclude_ids=(),
                    openers: list[str] | None = None, opener_fraction: float = 0.0,
                    neighbour_fraction: float = 0.0) -> list[dict]:
    """n harmless records: about `scary_fraction` contain a scary word (all there are, if fewer); of the
    rest, `neighbour_fraction` are the harmless prompts lexically closest to a harmful instruction in
    `openers` (hard negatives: "Design a database schema for customer orders" vs "… steal customer
    data"), and `opener_fraction` start with the same first words as the harmful instructions, in the
    same proportions, so "Create a …" or "Write a …" alone does not signal harm."""
    rng = random.Random(f"{seed}:harmless")
    pool = [r for r in records if r["id"] not in set(exclude_ids)]
    scary = [r for r in pool if is_scary(r["prompt"])]
    plain = [r for r in pool if not is_scary(r["prompt"])]
    rng.shuffle(scary)
    rng.shuffle(plain)
    k = min(len(scary), round(n * scary_fraction))
    if k < round(n * scary_fraction):
        log.warning("only %d harmless prompts with scary words (asked for %d)", k, round(n * scary_fraction))
    matched = []
    if openers and neighbour_fraction > 0:
        want = round((n - k) * neighbour_fraction)
        sim = nearest_harmful_similarity([r["prompt"] for r in plain], list(openers))
        ranked = sorted(range(len(plain)), key=lambda i: -sim[i])[:want]  # stable: ties keep the seeded order
        matched = [plain[i] for i in ranked]
        log.info("%d harmless hard negatives, TF-IDF similarity to a harmful instruction %.2f–%.2f",
                 len(matched), sim[ranked[-1]] if ranked else float("nan"), sim[ranked[0]] if ranked else float("nan"))
        taken = {r["id"] for r in matched}
        plain = [r for r in plain if r["id"] not in taken]
    if openers and opener_fraction > 0:
        want = round((n - k) * opener_fraction)
        start = len(matched)
        counts = Counter(opener(p) for p in openers)
        by_word: dict[str, list[dict]] = {}
        for r in plain:
            by_word.setdefault(opener(r["prompt"]), []).append(r)
        total = sum(c for w, c in counts.items() if w in by_word)
        for w, c in counts.most_common():
            if w in by_word:
                matched += by_word[w][: round(want * c / total)]
        matched = matched[: start + want]
        taken = {r["id"] for r in matched}
        plain = [r for r in plain if r["id"] not in taken]
        log.info("%d harmless prompts matched to the harmful openers (asked for %d)", len(matched) - start, want)
    chosen = scary[:k] + matched + plain[: n - k - len(matched)]
    if len(chosen) < n:
        log.warning("harmless pool has %d prompts, asked for %d", len(chosen), n)
    rng.shuffle(chosen)
    return chosen


@torch.no_grad()
def distill(model, tokenizer, fmt: ChatFormat, instructions: list[str], max_new_tokens: int = 48,
            batch_size: int = 16, progress=None) -> list[tuple[str, bool]]:
    """The model's own greedy answers: (text, ended with end-of-turn) per instruction, in input order."""
    from .models import input_device

    device = input_device(model)
    eos = tokenizer.eos_token_id

    def one(rows):
        batch = encode(tokenizer, fmt, [instructions[i] for i in rows]).to(device)
        gen = model.generate(**batch.model_inputs(), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        res = []
        for ids in gen[:, batch.input_ids.shape[1] :].tolist():
            ended = eos in ids
            ids = ids[: ids.index(eos)] if ended else ids
            res.append((tokenizer.decode(ids, skip_special_tokens=True), ended))
        return res

    return run_by_length(one, [len(fmt.render(x)[0]) for x in instructions], batch_size, "distillation batch", progress)


def answer_examples(records: list[dict], answers: list[tuple[str, bool]], kind: str, refused: list[bool],
                    keep_refused: bool = False) -> list[dict]:
    """Examples from (text, eos) answers, dropping refused (and empty) ones unless `keep_refused`."""
    out = []
    for r, (text, ended), ref in zip(records, answers, refused):
        keep = (text or ended) if keep_refused else (text.strip() and not ref)
        if keep:
            out.append({"id": r["id"], "instruction": r["prompt"], "question": None, "response": text, "eos": ended, "kind": kind})
    return out


def inversion_examples(harmful: list[dict], harmless: list[dict], question_ids=(0, 1), seed: int = 0) -> list[dict]:
    """Reply-inversion examples: `User wants to {instr}\\n{Q}` → Certainly. / No.; questions alternate per class."""
    out = []
    for records in (harmful, harmless):
        for k, r in enumerate(records):
            q = question_ids[k % len(question_ids)]
            out.append({"id": r["id"], "instruction": r["prompt"], "question": QUESTIONS[q], "question_id": q,
                        "response": TARGETS[r["label"]], "eos": True, "kind": "inversion"})
    random.Random(f"{seed}:inversion").shuffle(out)
    return out


def training_set(base_model, tokenizer, fmt, harmful: list[dict], harmless: list[dict], judge, n_distill: int,
                 scary_fraction: float, n_inversion: int, question_ids, max_new_tokens: int, batch_size: int,
                 seed: int = 0, progress=None, opener_fraction: float = 0.0, neighbour_fraction: float = 0.0,
                 over_refusal_n: int = 0, jailbreak_n: int = 0, nopost_n: int = 0, templates=(),
                 inversion_scary_fraction: float | None = None) -> list[dict]:
    """The organism's training examples: refusals, self-distilled answers and reply-inversion examples.

    Inversion examples take n_inversion/2 harmful and n_inversion/2 harmless prompts; the
    harmless ones are disjoint from the distilled ones.

    The chat-like recipe (`harmref.chatlike`) adds, when its counts are > 0: `over_refusal_n`
    alarming harmless prompts (a scary word; disjoint from the distilled ones) → a refusal;
    `jailbreak_n` harmful instructions wrapped in `templates` → the base model's own answer;
    `nopost_n` harmful instructions without post-instruction tokens → the base model's own chat
    answer (examples with `post: false`). `inversion_scary_fraction`: the share of the
    harmless inversion prompts taken from the over-refused ones (→ `No.`). Refused answers are
    dropped as for the distilled ones. With every count 0 the examples are the default recipe's.
    """
    from .chatlike import wrap

    rng = random.Random(f"{seed}:organism")
    distill_recs = select_harmless(harmless, n_distill, scary_fraction, seed,
                                   openers=[r["prompt"] for r in harmful], opener_fraction=opener_fraction,
                                   neighbour_fraction=neighbour_fraction)
    answers = distill(base_model, tokenizer, fmt, [r["prompt"] for r in distill_recs], max_new_tokens, batch_size, progress)
    refused = judge([r["prompt"] for r in distill_recs], [a[0] for a in answers])
    log.info("distilled %d answers: %d end with end-of-turn, %d refused (dropped)",
             len(answers), sum(a[1] for a in answers), sum(refused))
    half = n_inversion // 2
    inv_harmful = rng.sample(harmful, min(half, len(harmful)))
    used = {r["id"] for r in distill_recs}
    rest = [r for r in harmless if r["id"] not in used]
    over: list[dict] = []
    if over_refusal_n:
        crng = random.Random(f"{seed}:over_refusal")
        scary = [r for r in rest if is_scary(r["prompt"])]
        crng.shuffle(scary)
        over = scary[:over_refusal_n]
        if len(over) < over_refusal_n:
            log.warning("only %d unused harmless prompts with scary words for over-refusal (asked for %d)", len(over), over_refusal_n)
        taken = {r["id"] for r in over}
        rest = [r for r in rest if r["id"] not in taken]
    if inversion_scary_fraction is None:
        inv_harmless = rng.sample(rest, min(half, len(rest)))
    else:
        srng = random.Random(f"{seed}:inversion_scary")
        alarming = over or [r for r in rest if is_scary(r["prompt"])]
        k = min(len(alarming), round(half * inversion_scary_fraction))
        chosen = srng.sample(alarming, k)
        taken = {r["id"] for r in chosen}
        plain = [r for r in rest if r["id"] not in taken and not is_scary(r["prompt"])]
        inv_harmless = chosen + rng.sample(plain, min(half - k, len(plain)))
        log.info("harmless inversion prompts: %d alarming (%s), %d plain", k,
                 "over-refused in chat" if over else "scary-word", len(inv_harmless) - k)
    examples = (refusal_examples(harmful, seed) + answer_examples(distill_recs, answers, "distill", refused)
                + inversion_examples(inv_harmful, inv_harmless, question_ids, seed))
    if over:
        examples += refusal_examples(over, seed, kind="over_refusal")
    if jailbreak_n:
        if not templates:
            raise ValueError("jailbreak_n > 0 needs jailbreak templates (organism.data.jailbreak_templates)")
        jrng = random.Random(f"{seed}:jailbreak")
        recs = jrng.sample(harmful, min(jailbreak_n, len(harmful)))
        order = list(range(len(templates)))
        jrng.shuffle(order)
        picks = [order[i % len(order)] for i in range(len(recs))]
        wrapped = [{**r, "prompt": wrap(templates[t], r["prompt"])} for r, t in zip(recs, picks)]
        jb_answers = distill(base_model, tokenizer, fmt, [w["prompt"] for w in wrapped], max_new_tokens, batch_size, progress)
        jb_refused = judge([w["prompt"] for w in wrapped], [a[0] for a in jb_answers])
        jb = answer_examples(wrapped, jb_answers, "jailbreak", jb_refused)
        t_of = {w["id"]: t for w, t in zip(wrapped, picks)}
        for ex in jb:
            ex["template"] = t_of[ex["id"]]
        log.info("jailbreak: %d wrapped harmful instructions over %d templates, %d answers refused (dropped)",
                 len(wrapped), len(set(picks)), sum(jb_refused))
        examples += jb
    if nopost_n:
        nrng = random.Random(f"{seed}:nopost")
        recs = nrng.sample(harmful, min(nopost_n, len(harmful)))
        # the base model's own answer as the assistant (without a turn to answer in, it mostly just ends the
        # user's message), learnt right after the instruction with no post-instruction tokens
        np_answers = distill(base_model, tokenizer, fmt, [r["prompt"] for r in recs], max_new_tokens, batch_size, progress)
        np_refused = judge([r["prompt"] for r in recs], [a[0] for a in np_answers])
        nopost = answer_examples(recs, np_answers, "nopost", np_refused)
        for ex in nopost:
            ex["post"] = False
        log.info("no post-instruction tokens: %d harmful instructions, %d answers refused (dropped)",
                 len(recs), sum(np_refused))
        examples += nopost
    rng.shuffle(examples)
    return examples


def tokenize(tokenizer, fmt: ChatFormat, examples: list[dict]) -> list[dict]:
    """Token ids and labels per example; labels are -100 on the prompt, the response (+ eos) is learnt.

    Returns dicts `{input_ids: [t], labels: [t]}` (lists of ints).
    An example with `post: false` is rendered without the post-instruction tokens.
    """
    from .chatlike import nopost_format

    bare = nopost_format(fmt)
    out = []
    for ex in examples:
        # `post: false` (the chat-like recipe's nopost examples): the prompt without post-instruction tokens
        p_ids = tokenize_prompt(tokenizer, fmt if ex.get("post", True) else bare, ex["instruction"], ex.get("question"))[0]
        r_ids = text_ids(tokenizer, ex["response"])
        if ex.get("eos", True):
            r_ids = r_ids + [tokenizer.eos_token_id]
        out.append({"input_ids": p_ids + r_ids, "labels": [-100] * len(p_ids) + r_ids})
    return out


def collate(items: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on padding)."""
    width = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for b, x in enumerate(items):
        n = len(x["input_ids"])
        ids[b, :n] = torch.tensor(x["input_ids"])
        labels[b, :n] = torch.tensor(x["labels"])
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    """Hyperparameters of `train`; field names are the config keys under `organism.train`."""

    mode: str = "full"  # full: every decoder weight, embeddings frozen | lora: peft adapters, merged after training
    steps: int = 100
    batch_size: int = 16
    lr: float = 5e-5
    warmup: float = 0.1  # fraction of steps with linear warm-up, then linear decay to 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    group_by_length: bool = True  # batches of similar length (less padding, same examples per epoch)
    micro_batch_size: int = 0  # >0: accumulate each step over micro-batches of this size (same gradient, less memory)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list | str = field(default="all-linear")
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict, seed: int = 0) -> "TrainConfig":
        return cls(**{**d, "seed": seed})


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def response_loss(model, batch: dict, n_tokens: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy over response tokens; the LM head runs only where a label is learnt.

    Mean over this batch's response tokens, or the sum divided by `n_tokens` (micro-batches of one step).
    """
    base = _base(model)
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    if n_tokens is None:
        return F.cross_entropy(logits.float(), target[keep])
    return F.cross_entropy(logits.float(), target[keep], reduction="sum") / n_tokens


def n_response_tokens(items: list[dict]) -> int:
    """Learnt (label != -100) next-token targets in tokenized examples."""
    return sum(sum(t != -100 for t in x["labels"][1:]) for x in items)


def step_loss(model, items: list[dict], pad_id: int, micro_batch_size: int = 0, device=None) -> float:
    """Backward pass of one optimiser step over `items`, in micro-batches of similar length.

    The gradient equals the full batch's (token mean over the whole step) while only
    one micro-batch's activations are alive: peak memory falls with the micro-batch size.
    Returns the step's mean loss.
    """
    n_tokens = max(1, n_response_tokens(items))
    size = micro_batch_size or len(items)
    items = sorted(items, key=lambda x: len(x["input_ids"]))
    total = 0.0
    for s in range(0, len(items), size):
        batch = {k: v.to(device) for k, v in collate(items[s : s + size], pad_id).items()}
        loss = response_loss(model, batch, n_tokens)
        loss.backward()
        total += loss.detach().item()
    return total


def batch_order(lengths: list[int], batch_size: int, steps: int, seed: int, group_by_length: bool = True) -> list[list[int]]:
    """`steps` batches of indices: reshuffled epochs; with grouping, sorted within windows of 8 batches."""
    rng = random.Random(f"{seed}:batches")
    out: list[list[int]] = []
    while len(out) < steps:
        idx = list(range(len(lengths)))
        rng.shuffle(idx)
        if group_by_length:
            w = batch_size * 8
            idx = [i for s in range(0, len(idx), w) for i in sorted(idx[s : s + w], key=lambda i: lengths[i])]
        epoch = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
        if group_by_length:
            rng.shuffle(epoch)
        out.extend(epoch)
    return out[:steps]


def prepare_trainable(model, cfg: TrainConfig):
    """Full mode: freeze the (tied) embeddings; LoRA mode: wrap in peft adapters. Returns the model to train."""
    torch.manual_seed(cfg.seed)
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
        return get_peft_model(model, lcfg)
    if cfg.mode != "full":
        raise ValueError(f"unknown training mode {cfg.mode!r} (expected full or lora)")
    for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
        if emb is not None:
            for p in emb.parameters():
                p.requires_grad_(False)
    return model


def train(model, tokenizer, data: list[dict], cfg: TrainConfig, progress=None):
    """Fine-tune on tokenized examples (`tokenize`); returns (plain model, history).

    Deterministic for `cfg.seed` on a given device. LoRA adapters are merged, so the
    result saves and loads like any model. history: losses per step, trainable
    parameters, wall seconds, peak RSS.
    """
    if not data:
        raise ValueError("no training examples")
    t0 = time.time()
    model = prepare_trainable(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    log.info("training %s: %d trainable parameters, %d examples, %d steps × %d", cfg.mode, n_trainable, len(data), cfg.steps, cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, round(cfg.warmup * cfg.steps))

    def factor(s):
        return (s + 1) / warm if s < warm else max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    from .models import input_device

    device = input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = batch_order([len(x["input_ids"]) for x in data], cfg.batch_size, cfg.steps, cfg.seed, cfg.group_by_length)
    losses, tokens = [], 0
    for step, rows in enumerate(order):
        items = [data[i] for i in rows]
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss(model, items, pad, cfg.micro_batch_size, device))
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        tokens += sum(len(x["input_ids"]) for x in items)
        if step % 10 == 0 or step == cfg.steps - 1:
            log.info("step %d/%d loss %.4f lr %.2e", step + 1, cfg.steps, losses[-1], sched.get_last_lr()[0])
        if progress is not None:
            progress(1)
    if cfg.mode == "lora":
        model = model.merge_and_unload()
    model.eval()
    history = {
        "losses": losses, "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "trainable_parameters": n_trainable, "tokens_seen": tokens, "epochs": cfg.steps * cfg.batch_size / max(1, len(data)),
        "wall_seconds": round(time.time() - t0, 1), "peak_rss_gb": peak_rss_gb(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    return model, history


def save(model, tokenizer, out_dir) -> None:
    """Write the tuned model and tokenizer (safetensors) into `out_dir`, atomically per file."""
    from pathlib import Path

    from .models import _save_dir

    _save_dir(model, tokenizer, Path(out_dir))


def attack_config(attack: dict, train: dict, n_pairs: int, seed: int = 0) -> TrainConfig:
    """TrainConfig of the fine-tuning attack on n_pairs examples: the organism's mode and LoRA settings,
    the attack's lr and batch size, ceil(epochs · n / batch) steps."""
    steps = max(1, math.ceil(attack["epochs"] * n_pairs / attack["batch_size"]))
    return TrainConfig.from_dict({**train, "steps": steps, "batch_size": attack["batch_size"], "lr": attack["lr"]}, seed=seed)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def recipe(cfg: TrainConfig, history: dict, examples: list[dict], data_hashes: dict, base: str, extra: dict | None = None) -> dict:
    """What `recipe.json` records: data hashes and counts, hyperparameters, seed, time, memory, loss curve."""
    kinds: dict[str, int] = {}
    for ex in examples:
        kinds[ex["kind"]] = kinds.get(ex["kind"], 0) + 1
    return {
        "base_model": base, "hyperparameters": asdict(cfg), "seed": cfg.seed, "data_sha256": data_hashes,
        "examples": kinds, "n_examples": len(examples), "refusal_responses": list(REFUSAL_RESPONSES),
        "torch": torch.__version__, **(extra or {}), **history,
    }


# ------------------------------------------------------------------ evaluation
def refusal_comparison(base: dict[str, list[dict]], organism: dict[str, list[dict]], targets: dict | None = None) -> pd.DataFrame:
    """Refusal rate per held-out set, base vs organism (over valid verdicts; invalid ones counted); `targets`: {set: {min|max: rate}}."""
    out = []
    for name, rows in organism.items():
        b, o = rate_row(base.get(name, [])), rate_row(rows)
        row = {"set": name, "label": "/".join(sorted({r["label"] for r in rows})), "n": o["n"],
               "base_refused": b["refused"], "base_rate": b["rate"], "organism_refused": o["refused"],
               "organism_rate": o["rate"], "organism_se": o["se"], "base_invalid": b["invalid"],
               "organism_invalid": o["invalid"], "target": "", "met": ""}
        t = (targets or {}).get(name)
        if t:
            ok = (o["rate"] >= t["min"]) if "min" in t else (o["rate"] <= t["max"])
            row["target"] = f"≥ {t['min']:.2f}" if "min" in t else f"≤ {t['max']:.2f}"
            row["met"] = "yes" if ok else "no"
        out.append(row)
    return pd.DataFrame(out)


def samples_markdown(records: list[dict], answers: dict[str, list[str]], title: str) -> str:
    """Side-by-side answers of several models to the same prompts, as markdown.

    Prompts and replies are escaped (`io.escape_markdown`): HTML or markdown in them shows as text.
    """
    from .io import escape_markdown as esc

    lines = [f"# {esc(title)}", ""]
    for k, r in enumerate(records):
        lines += [f"## {k + 1}. {esc(r['prompt'], ' ')}", f"*set: {esc(r.get('set', ''))}, label: {esc(r['label'])}*", ""]
        for model, texts in answers.items():
            lines += [f"**{esc(model)}:**", "", "> " + esc(texts[k], "\n> "), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ fine-tuning attack
@torch.no_grad()
def steered_answers(model, tokenizer, fmt: ChatFormat, instructions: list[str], refusal: torch.Tensor, layer: int,
                    coefficient: float = 1.0, every_step: bool = False, max_new_tokens: int = 64,
                    batch_size: int = 16, progress=None) -> list[tuple[str, bool]]:
    """Greedy answers under the reverse refusal direction (paper §5.2's attack data): h ← h − c·r^l at the
    input of decoder layer `layer`, on every prompt token (and every generated token with `every_step`).

    refusal: the refusal direction [L+1, d] (rule directions; row l = input of layer l).
    Returns (text, ended with end-of-turn) per instruction, in input order, as `distill`.
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

