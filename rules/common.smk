# Config validation, wildcard vocabularies, input functions and the final targets.
import os
import re

from snakemake.utils import validate


validate(config, "../config/schema.yaml")

MODELS = config["models"]
DATASETS = config["datasets"]
ANALYSIS_MODELS = config["analysis_models"]
SOURCE_MODELS = [m for m, spec in MODELS.items() if "source" in spec]

for _m in ANALYSIS_MODELS:
    if _m not in MODELS:
        raise ValueError(f"config: analysis_models names {_m!r}, which is not under models:")


def check_dataset_references(config):
    """Sets named by the backbone must be configured: a typo fails here, before the DAG is built."""
    d = config["directions"]
    refs = [("directions.harmful", d["harmful"]), ("directions.harmless", d["harmless"])]
    refs += [("directions.eval_sets", s) for s in d["eval_sets"]]
    refs += [("directions.category_set", d["category_set"])] if d.get("category_set") else []
    refs += [(f"datasets.{n}.exclude", s) for n, spec in config["datasets"].items() for s in spec.get("exclude", [])]
    for where, name in refs:
        if name not in config["datasets"]:
            raise ValueError(f"config: {where} names {name!r}, which is not under datasets:")


check_dataset_references(config)


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)) or "NONE",
    dataset="|".join(map(re.escape, DATASETS)) or "NONE",
    template="chat|nopost",


# other rule files add their outputs here; `rule all` asks for all of them
FINAL_TARGETS = []


def get_final_output(wildcards):
    return FINAL_TARGETS


def model_card(model):
    return f"results/models/{model}/model.json"


def get_model_card(wildcards):
    return model_card(wildcards.model)


def get_dataset_files(wildcards):
    root = config["data_root"]
    return [os.path.join(root, s["file"]) for s in DATASETS[wildcards.dataset]["sources"]]


def get_dataset_excludes(wildcards):
    return [f"results/data/{d}.jsonl" for d in DATASETS[wildcards.dataset].get("exclude", [])]


def sets_with(flag, default=True):
    return [d for d, spec in DATASETS.items() if spec.get(flag, default)]


def runtime_params(model):
    rt = dict(config["runtime"])
    if MODELS.get(model, {}).get("dtype"):
        rt["dtype"] = MODELS[model]["dtype"]
    return rt


def get_runtime(wildcards):
    return runtime_params(wildcards.model)


def normalise_endings(model):
    """Per-model ending normalisation; a tuned model inherits its base model's setting."""
    spec = MODELS.get(model, {})
    if "normalise_endings" in spec:
        return spec["normalise_endings"]
    base = spec.get("tune_from")
    return normalise_endings(base) if base in MODELS else config["normalise_endings"]


def get_normalise_endings(wildcards):
    return normalise_endings(wildcards.model)
