"""Supervised fine-tuning of a chat model on examples (the organism's safety-tune and the fine-tuning attack).

An example is a dict `{instruction, question (or None), response, eos, kind}` (`harmref.organism`
builds the organism's; rule attack_pairs the attack's). `tokenize` renders it with the model's chat
template, loss on the response tokens only (+ end of turn); `train` runs AdamW with linear warm-up
and decay, batches of similar length, optional micro-batches. Full fine-tune with frozen embeddings
on a CPU, or LoRA (peft) for 7–8B models on a GPU, merged into the saved weights. `recipe` is what
`recipe.json` records.
"""

from __future__ import annotations

import logging
import random
import resource
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .organism import REFUSAL_RESPONSES
from .positions import ChatFormat, text_ids, tokenize_prompt

log = logging.getLogger(__name__)


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
    precision: str = "fp32"  # fp32 | bf16: bf16 autocast of the forward pass (fp32 weights, optimiser, loss) | auto
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict, seed: int = 0) -> "TrainConfig":
        return cls(**{**d, "seed": seed})


PRECISIONS = ("fp32", "bf16", "auto")


def resolve_precision(precision: str, device) -> str:
    """`fp32` or `bf16` for `TrainConfig.precision` on `device`.

    `auto`: bf16 where the device multiplies bf16 natively (a CUDA GPU that supports it; a CPU with AMX
    or AVX512-BF16, e.g. Xeon Sapphire Rapids and later), else fp32: on other CPUs bf16 is emulated and
    slower than fp32. The choice is recorded in the trained model's recipe.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"organism.train.precision: {precision!r} is not one of {PRECISIONS}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_native_bf16() else "fp32"
    return "fp32"


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16, which oneDNN's bf16 kernels use)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:
        return False


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


def step_loss(model, items: list[dict], pad_id: int, micro_batch_size: int = 0, device=None,
              precision: str = "fp32") -> float:
    """Backward pass of one optimiser step over `items`, in micro-batches of similar length.

    The gradient equals the full batch's (token mean over the whole step) while only
    one micro-batch's activations are alive: peak memory falls with the micro-batch size.
    `precision` bf16: the forward pass under bf16 autocast (`resolve_precision`).
    Returns the step's mean loss.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n_tokens = max(1, n_response_tokens(items))
    size = micro_batch_size or len(items)
    items = sorted(items, key=lambda x: len(x["input_ids"]))
    total = 0.0
    for s in range(0, len(items), size):
        batch = {k: v.to(device) for k, v in collate(items[s : s + size], pad_id).items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
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
    log.info("training %s: %d trainable parameters, %d examples, %d steps × %d", cfg.mode, n_trainable, len(data),
             cfg.steps, cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, round(cfg.warmup * cfg.steps))

    def factor(s):
        return (s + 1) / warm if s < warm else max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    from .models import input_device

    device = input_device(model)
    precision = resolve_precision(cfg.precision, device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = batch_order([len(x["input_ids"]) for x in data], cfg.batch_size, cfg.steps, cfg.seed, cfg.group_by_length)
    losses, tokens = [], 0
    for step, rows in enumerate(order):
        items = [data[i] for i in rows]
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss(model, items, pad, cfg.micro_batch_size, device, precision))
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
        "torch_threads": torch.get_num_threads(), "device": str(device), "precision": precision,
    }
    return model, history


def save(model, tokenizer, out_dir) -> None:
    """Write the tuned model and tokenizer (safetensors) into `out_dir`, atomically per file."""
    from pathlib import Path

    from .models import _save_dir

    _save_dir(model, tokenizer, Path(out_dir))


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
