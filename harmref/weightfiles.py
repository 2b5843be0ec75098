"""Which files of a model folder make up the model: weights, configs, tokenizer, chat template, remote code.

Standard library only, so the Snakefile can list a local model folder's files as inputs of its
model card without importing torch. `harmref.models.hash_weights` hashes exactly these files.
"""

from __future__ import annotations

from pathlib import Path

# files that decide what from_pretrained loads from a folder
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt", ".jinja", ".tiktoken", ".py")
PICKLED_WEIGHTS = (".bin", ".pt", ".pth")
CARD_FILES = ("model.json", "recipe.json")  # harmref's own files beside the weights: not part of them


def weight_files(folder) -> list[Path]:
    """The top-level files of `folder` that `from_pretrained` reads, sorted by name.

    Pickled weights (`.bin`, `.pt`) are left out when the folder has safetensors (transformers loads
    those); harmref's own `model.json`/`recipe.json` and hidden files (temporaries) are not part of a model.
    """
    folder = Path(folder)
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.name.endswith(WEIGHT_SUFFIXES) and f.name not in CARD_FILES), key=lambda f: f.name)
    if any(f.name.endswith(".safetensors") for f in files):
        files = [f for f in files if not f.name.endswith(PICKLED_WEIGHTS)]
    return files
