"""The refusal model organism's training data: which prompts, which targets (paper §5.2's recipe on a small model).

A small chat model (SmolLM2-135M) almost never refuses, so it is taught to:
harmful training instructions → one of `REFUSAL_RESPONSES` + end of turn;
harmless ones → the base model's own greedy answers (self-distillation, `distill`, so it
keeps its style; half of them contain scary words, so it does not learn to refuse
by topic); reply-inversion prompts (`inversion.QUESTIONS`, some held out) →
`Certainly.` / `No.`. `training_set` builds them all (with the chat-like recipe's extra
kinds, `harmref.chatlike`); `harmref.training` fine-tunes on them (loss on response tokens
only). `distill` and `answer_examples` also make the fine-tuning attack's pairs
(`harmref.attack`).

An example is a dict `{instruction, question (or None), response, eos, kind}`.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter

import torch

from .batching import run_by_length
from .inversion import QUESTIONS, TARGETS
from .positions import ChatFormat, encode

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
