# Config validation (all of it, here), the config blocks and wildcard vocabularies every rule file reads,
# input functions and the final targets. Globals used here are defined here: no function reads a name
# that a later rule file defines. Paths a later rule reads come from the earlier rule's `rules.X.output`.
import os
import re

from snakemake.utils import validate

from harmref.report import figure_section  # the HTML report's section of each figure (harmref/report.py)
from harmref.overrides import coerce_overrides


# `--config` delivers the numbers and booleans inside a nested value as strings ('guard={llama_guard:
# {enabled: false}}' gives enabled: 'false'): read them as YAML would where the schema's type allows it
coerce_overrides(config, workflow.config_settings.config, os.path.join(workflow.basedir, "config", "schema.yaml"))
validate(config, "../config/schema.yaml")

MODELS = config["models"]
# torch threads of each job that runs a model (`threads:` of those rules). Snakemake sets OMP_NUM_THREADS
# from it (1 where none is declared) and caps it at --cores; runlog.start hands it to torch
MODEL_THREADS = config["runtime"]["threads"]
ANALYSIS_MODELS = config["analysis_models"]
SOURCE_MODELS = [m for m, spec in MODELS.items() if "source" in spec]
# refusal model organisms (rules/organism.smk): safety-tuned from a model with a source
TUNED_MODELS = [m for m, spec in MODELS.items() if "tune_from" in spec]
GENERATION = config["generation"]
GUARD = config["guard"]
ORGANISM = config["organism"]

for _m in ANALYSIS_MODELS:
    if _m not in MODELS:
        raise ValueError(f"config: analysis_models names {_m!r}, which is not under models:")
for _m in TUNED_MODELS:
    if "source" in MODELS[_m]:
        raise ValueError(f"config: model {_m!r} has both source and tune_from")
    if MODELS[_m]["tune_from"] not in SOURCE_MODELS:
        raise ValueError(f"config: model {_m!r} is tuned from {MODELS[_m]['tune_from']!r}, which has no source")
# A tuned model's own `organism:` (data / train keys) overrides the top-level blocks for it alone: two
# organisms, e.g. the default and the chat-like recipe (config/organisms.yaml), train side by side.
# The chat-like keys of organism.data (harmref.chatlike) have no schema defaults, so a recipe that does
# not set them keeps exactly its params.
CHATLIKE_DATA_KEYS = ("over_refusal_n", "jailbreak_n", "nopost_n", "inversion_scary_fraction",
                      "jailbreak_templates", "heldout_templates", "jailbreak_max_chars")
for _m, _spec in MODELS.items():
    if "organism" in _spec and "tune_from" not in _spec:
        raise ValueError(f"config: models.{_m}.organism is a tuned model's own recipe, but {_m!r} has no tune_from")
for _m in TUNED_MODELS:
    _own = MODELS[_m].get("organism", {})
    for _block, _over in _own.items():
        _known = set(ORGANISM[_block]) | (set(CHATLIKE_DATA_KEYS) if _block == "data" else set())
        _bad = sorted(set(_over) - _known)
        if _bad:
            raise ValueError(f"config: models.{_m}.organism.{_block} has unknown key(s) {_bad}; known: {sorted(_known)}")
    _d = {**ORGANISM["data"], **_own.get("data", {})}
    if _d.get("jailbreak_n", 0) and not _d.get("jailbreak_templates"):
        raise ValueError(f"config: organism.data.jailbreak_n of {_m!r} is {_d['jailbreak_n']} but no jailbreak_templates file is set")
    for _k in ("jailbreak_templates", "heldout_templates"):
        if _d.get(_k) and not os.path.exists(os.path.join(config["data_root"], _d[_k])):
            raise ValueError(f"config: organism.data.{_k} of {_m!r}: {config['data_root']}/{_d[_k]} not found")


def organism_recipe(model):
    """organism.data and organism.train of tuned model `model`: the top-level blocks with its own overrides."""
    own = MODELS[model].get("organism", {})
    return {block: {**ORGANISM[block], **own.get(block, {})} for block in ("data", "train")}


# rule organism_replies answers the inversion and sample prompts with each organism and its base model
ORGANISM_EVAL_MODELS = list(dict.fromkeys(x for m in TUNED_MODELS for x in (m, MODELS[m]["tune_from"])))

# The fine-tuning attack (paper §5.2, Fig 7; rules/organism.smk): every analysed model fine-tuned on the first
# N attack pairs is a derived model `{model}-attack{N}` (rule attack_train), made here from organism.attack
# (never typed under models:); generate / judge / extract_hidden then read the eval sets with it like any model.
ATTACK = ORGANISM["attack"]
ATTACK_SOURCES = list(ANALYSIS_MODELS) if ATTACK["enabled"] else []
ATTACKED_MODELS = {f"{m}-attack{n}": {"attack_from": m, "n_pairs": n} for m in ATTACK_SOURCES for n in ATTACK["n_pairs"]}
for _m in ATTACKED_MODELS:
    if _m in MODELS:
        raise ValueError(f"config: model {_m!r} under models: has the name of an attacked model (rule attack_train "
                         f"makes {_m} from organism.attack.n_pairs); rename it")
MODELS = {**MODELS, **ATTACKED_MODELS}


def attack_pairs_from(model):
    """Where `model`'s attack pairs come from: organism.attack.pairs_from, `auto` resolved (a tuned organism:
    its base model's own answers; any other model: its own answers under the reverse refusal direction)."""
    mode = ATTACK["pairs_from"]
    if mode == "auto":
        return "base" if model in TUNED_MODELS else "steered"
    return mode


for _m in ATTACK_SOURCES:
    if attack_pairs_from(_m) == "base" and _m not in TUNED_MODELS:
        raise ValueError(f"config: organism.attack.pairs_from is base, but analysed model {_m!r} has no tune_from "
                         "(no base model to answer); use auto, steered or self")
for _s in [ORGANISM["harmful"], *ATTACK["eval_sets"]] if ATTACK_SOURCES else []:
    if _s not in config["datasets"]:
        raise ValueError(f"config: organism.attack reads set {_s!r}, which is not under datasets:")
for _s in ATTACK["eval_sets"] if ATTACK_SOURCES else []:
    for _flag in ("generate", "hidden"):
        if not config["datasets"][_s].get(_flag, True):
            raise ValueError(f"config: organism.attack.eval_sets names {_s!r}, whose {_flag} is false (the attacked "
                             "models' replies and hidden states of it are what Fig 7 reads)")

# nanoGCG suffixes optimised against each analysed model itself (guard.gcg, off by default): one derived
# prompt set per model, `{gcg.set}.{model}`, written by rule gcg_attack instead of build_dataset.
GCG = GUARD["gcg"]
if GCG["set"] in config["datasets"]:
    raise ValueError(f"config: guard.gcg.set {GCG['set']!r} is also under datasets: (it names the nanoGCG sets)")
if GCG["enabled"] and GCG["goals"] not in config["datasets"]:
    raise ValueError(f"config: guard.gcg.goals names {GCG['goals']!r}, which is not under datasets:")
GCG_SETS = {f"{GCG['set']}.{m}": m for m in ANALYSIS_MODELS} if GCG["enabled"] else {}
# the keys of guard.gcg that the search reads (harmref.gcg.attack_set); enabled / set / goals name files
GCG_SEARCH_KEYS = ("n", "target", "num_steps", "search_width", "topk", "n_replace", "optim_str_init", "batch_size", "early_stop")
DATASETS = {
    **config["datasets"],
    **{name: {"label": "harmful", "sources": [], "generate": False, "hidden": False} for name in GCG_SETS},
}
BUILT_SETS = [d for d in DATASETS if d not in GCG_SETS]


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


def get_model_source_files(wildcards):
    """A local model folder's weight/config/tokenizer files, or a .gguf file: inputs of its card, so
    weights replaced in place rerun prepare_model (a new identity) and everything that used them."""
    from harmref.weightfiles import weight_files

    src = MODELS[wildcards.model]["source"]
    if os.path.isdir(src):
        return [str(f) for f in weight_files(src)]
    return [src] if src.endswith(".gguf") and os.path.isfile(src) else []


def get_model_source(wildcards):
    """The keys of a model's entry that prepare_model reads (not normalise_endings, dtype or n_layers, which
    later rules read: changing them must not rewrite the card and so rerun everything downstream)."""
    spec = MODELS[wildcards.model]
    return {k: spec[k] for k in ("source", "sha256", "revision", "trust_remote_code") if k in spec}


def get_dataset_files(wildcards):
    root = config["data_root"]
    return [os.path.join(root, s["file"]) for s in DATASETS[wildcards.dataset]["sources"]]


def get_dataset_excludes(wildcards):
    return [prompts_file(d) for d in DATASETS[wildcards.dataset].get("exclude", [])]


def sets_with(flag, default=True):
    return [d for d, spec in DATASETS.items() if spec.get(flag, default)]


def pick(block, *keys):
    """The keys of a config block that a rule's script reads: its `params`, so that a change to any other
    key of the block does not rerun the rule (Snakemake reruns a job whose params changed)."""
    return {k: block[k] for k in keys}


# what models.load and the batch loops read (runtime.threads is each rule's `threads:`, not a param)
RUNTIME_KEYS = ("device", "dtype", "device_map", "max_memory", "batch_size")


def parent_of(model):
    """The model a derived model comes from (its tune_from or attack_from), or None."""
    spec = MODELS.get(model, {})
    return spec.get("tune_from") or spec.get("attack_from")


def model_dtype(model):
    """A model's own dtype, else the one of the model it is derived from (None: runtime.dtype)."""
    spec = MODELS.get(model, {})
    return spec.get("dtype") or (model_dtype(parent_of(model)) if parent_of(model) else None)


def runtime_params(model):
    rt = pick(config["runtime"], *RUNTIME_KEYS)
    if model_dtype(model):
        rt["dtype"] = model_dtype(model)
    return rt


def get_runtime(wildcards):
    return runtime_params(wildcards.model)


def normalise_endings(model):
    """Per-model ending normalisation; a tuned or attacked model inherits its base model's setting."""
    spec = MODELS.get(model, {})
    if "normalise_endings" in spec:
        return spec["normalise_endings"]
    base = parent_of(model)
    return normalise_endings(base) if base in MODELS else config["normalise_endings"]


def get_normalise_endings(wildcards):
    return normalise_endings(wildcards.model)


# ---- input functions of rules/data.smk (kept apart from its rules for snakemake --lint)


def manifest_sets():
    """Sets whose source files exist (and whose excluded sets do): the ones a run can build."""
    root, ok = config["data_root"], {}

    def buildable(name):
        if name not in ok:
            spec = DATASETS[name]
            ok[name] = all(os.path.exists(os.path.join(root, s["file"])) for s in spec["sources"]) and all(
                e in DATASETS and buildable(e) for e in spec.get("exclude", [])
            )
        return ok[name]

    return [d for d in BUILT_SETS if buildable(d)]


# ---- paths of earlier rules' outputs that later rules read: `rules.X.output` (resolved when the DAG is
# built, so these functions may name rules of any file), never a path typed again


def prompts_file(dataset):
    """results/data/{dataset}.jsonl, written by build_dataset (or, for a nanoGCG set, by gcg_attack; the same path)."""
    return expand(rules.build_dataset.output[0], dataset=dataset)[0]


def view_file(model, dataset, template="chat"):
    """`model`'s view of `dataset`, written by prompt_view (normalised, rendered, tokenized, positions located)."""
    return expand(rules.prompt_view.output.view, model=model, template=template, dataset=dataset)[0]


def get_chat_view(wildcards):
    return view_file(wildcards.model, wildcards.dataset)


def generations_file(model, dataset, template="chat"):
    """The judged generations (rule judge) of `model` on `dataset`."""
    return expand(rules.judge.output.generations, model=model, template=template, dataset=dataset)[0]


def hidden_file(model, dataset):
    return expand(rules.extract_hidden.output.tensors, model=model, dataset=dataset)[0]


def directions_file(model):
    return expand(rules.directions.output[0], model=model)[0]


def table_file(rule, name, model):
    """`{name}.csv` as the rule named `rule` declares it, for `model` (a table it no longer writes fails here)."""
    hits = [f for f in getattr(rules, rule).output if os.path.basename(f) == f"{name}.csv"]
    if len(hits) != 1:
        raise ValueError(f"rule {rule} declares no output {name}.csv")
    return expand(hits[0], model=model)[0]


# ---- input functions of rules/behaviour.smk (kept apart from its rules for snakemake --lint)


def get_ollama_judge():
    """generation.ollama_judge where the Ollama judge is in use, else {}: a setting of a judge not in use
    reruns nothing."""
    return GENERATION.get("ollama_judge", {}) if GENERATION["judge"] == "ollama" else {}


def get_generations(wildcards):
    return [generations_file(wildcards.model, d) for d in sets_with("generate")]


def get_nopost_pairs(wildcards):
    sets = [d for d in sets_with("generate") if DATASETS[d].get("nopost")]
    return [generations_file(wildcards.model, d, t) for d in sets for t in ("chat", "nopost")]


# ---- input functions of rules/directions.smk (kept apart from its rules for snakemake --lint)


def get_direction_inputs(wildcards):
    m, d = wildcards.model, config["directions"]
    out = {}
    for role in ("harmful", "harmless"):
        out[f"{role}_hidden"] = hidden_file(m, d[role])
        out[f"{role}_gen"] = generations_file(m, d[role])
    return out


def get_geometry_inputs(wildcards):
    m, d = wildcards.model, config["directions"]
    out = {
        "directions": directions_file(m),
        "hidden": [hidden_file(m, s) for s in d["eval_sets"]],
        "gens": [generations_file(m, s) for s in d["eval_sets"]],
    }
    if d.get("category_set"):
        out["category"] = hidden_file(m, d["category_set"])
    return out


# ---- input functions of rules/guard.smk (kept apart from its rules for snakemake --lint)


def guard_test_status():
    """Split the configured Table 3 test sets into runnable ones and skipped ones ({name: reason})."""
    ok, skipped = [], {}
    for t in GUARD["tests"]:
        spec = DATASETS.get(t["set"])
        if t["set"] == GCG["set"]:
            reason = None if GCG["enabled"] else (
                "the nanoGCG attack against the model itself is off (guard.gcg.enabled: false; "
                "hours on a CPU, see docs/latent_guard.md)"
            )
        elif spec is None:
            reason = f"dataset {t['set']!r} is not configured"
        else:
            missing = [s["file"] for s in spec["sources"] if not os.path.exists(os.path.join(config["data_root"], s["file"]))]
            reason = f"{config['data_root']}/{missing[0]} not found" if missing else None
        if reason is None:
            ok.append(t)
            continue
        if t["name"] == "persuasion":
            reason += (
                ": the PAP persuasion prompts (CHATS-Lab/Persuasive-Jailbreaker-Data, field ss_prompt) are gated and "
                "not shipped; see docs/latent_guard.md to add them"
            )
        skipped[t["name"]] = f"skipped: {reason}"
    return ok, skipped


GUARD_TESTS, GUARD_SKIPPED = guard_test_status()
GUARD_SETS = list(dict.fromkeys(t["set"] for t in GUARD_TESTS))


def model_set(name, model):
    """A test set as `model` sees it: the nanoGCG set stands for the prompts optimised against `model`."""
    return f"{name}.{model}" if name == GCG["set"] else name


def guard_sets(model):
    return [model_set(s, model) for s in GUARD_SETS]


def guard_tests(model):
    return [{**t, "set": model_set(t["set"], model)} for t in GUARD_TESTS]


def get_guard_sets(wildcards):
    return guard_sets(wildcards.model)


def get_guard_tests(wildcards):
    return guard_tests(wildcards.model)


def text_guard_sets():
    """Every set a text-only guard scores: the plain sets once, the nanoGCG set of each analysed model."""
    return list(dict.fromkeys(s for m in ANALYSIS_MODELS for s in guard_sets(m)))


def get_latent_guard_inputs(wildcards):
    m = wildcards.model
    aug = [a["set"] for a in GUARD["augment"]]
    return {
        "directions": directions_file(m),
        # the guard artefact (guard.json) records the model's identity and the training sets' sha256
        "model": model_card(m),
        "train": [prompts_file(config["directions"][r]) for r in ("harmful", "harmless")],
        "hidden": [hidden_file(m, s) for s in guard_sets(m)],
        "gens": [generations_file(m, s) for s in guard_sets(m)],
        "augment_hidden": [hidden_file(m, s) for s in aug],
        "augment_gens": [generations_file(m, s) for s in aug],
    }


def get_text_guards(wildcards):
    out = {}
    if GUARD["minilm"]["enabled"]:
        out["minilm"] = rules.minilm_guard.output[0]
    if GUARD["llama_guard"]["enabled"]:
        out["llama_guard3"] = expand(rules.llama_guard.output[0], dataset=guard_sets(wildcards.model))
    return out


# ---- input functions of rules/organism.smk (kept apart from its rules for snakemake --lint)


def base_of(model):
    return MODELS[model]["tune_from"]


def get_base_card(wildcards):
    return model_card(base_of(wildcards.model))


def get_base_runtime(wildcards):
    return runtime_params(base_of(wildcards.model))


def get_organism_pools(wildcards):
    out = {role: prompts_file(ORGANISM[role]) for role in ("harmful", "harmless")}
    data = organism_recipe(wildcards.model)["data"]
    for key in ("jailbreak_templates", "heldout_templates"):  # the chat-like recipe's template files
        if data.get(key):
            out[key] = os.path.join(config["data_root"], data[key])
    return out


def get_eval_generations(wildcards):
    sets = ORGANISM["eval"]["refusal_sets"]
    return {
        "organism_gens": [generations_file(wildcards.model, s) for s in sets],
        "base_gens": [generations_file(base_of(wildcards.model), s) for s in sets],
    }


def get_organism_replies(wildcards):
    """organism_replies of the organism and of its base model."""
    out = {}
    for role, m in (("organism", wildcards.model), ("base", base_of(wildcards.model))):
        for what in ("inversion", "samples"):
            out[f"{role}_{what}"] = expand(getattr(rules.organism_replies.output, what), model=m)[0]
    return out


def attack_source(model):
    """The model whose answers make `model`'s attack pairs: its base (pairs_from base) or itself."""
    return base_of(model) if attack_pairs_from(model) == "base" else model


def get_attack_pair_inputs(wildcards):
    m = wildcards.model
    out = {"source": model_card(attack_source(m)), "harmful": prompts_file(ORGANISM["harmful"])}
    if attack_pairs_from(m) == "steered":  # the reverse refusal direction of the model itself
        out["directions"] = directions_file(m)
    return out


def get_attack_train_inputs(wildcards):
    m = MODELS[wildcards.model]["attack_from"]
    return {"base": model_card(m), "pairs": expand(rules.attack_pairs.output[0], model=m)[0]}


def attacked_models(model):
    """`model` (N = 0) and its attacked models, in organism.attack.n_pairs order."""
    return [model] + [f"{model}-attack{n}" for n in ATTACK["n_pairs"]]


def get_attack_eval_inputs(wildcards):
    """Fig 7's inputs: the unattacked model's centroids; every attacked model's judged replies, hidden
    states (one file per model × eval set, models outermost) and training recipe."""
    m, sets = wildcards.model, ATTACK["eval_sets"]
    names = attacked_models(m)
    return {
        "directions": directions_file(m),
        "gens": [generations_file(x, s) for x in names for s in sets],
        "hidden": [hidden_file(x, s) for x in names for s in sets],
        "recipes": expand(rules.attack_train.output.recipe, model=names[1:]),
    }


# ---- input functions of rules/steering.smk (kept apart from its rules for snakemake --lint)


def get_steer_prompts(wildcards):
    m, s = wildcards.model, config["steering"]
    if wildcards.experiment == "refusal":
        return [generations_file(m, s["refusal"]["set"])]
    return [prompts_file(s["inversion"][k]) for k in ("harmless_set", "harmful_set")]


# the keys of `steering:` each job reads: a sweep those of its own experiment, the controls both
# experiments' and `controls:`; steering.llm_judge only where it is on, as plain host / model / timeout
SWEEP_KEYS = ("n_prompts", "layers", "layer_start", "layer_stride", "coefficient", "unit", "every_step", "batch_size", "answer_tokens")
CONTROL_KEYS = ("coefficient", "unit", "every_step", "batch_size", "answer_tokens", "controls", "refusal", "inversion")


def get_sweep_params(wildcards):
    s = config["steering"]
    return {**pick(s, *SWEEP_KEYS), wildcards.experiment: s[wildcards.experiment]}


def get_control_params(wildcards):
    return pick(config["steering"], *CONTROL_KEYS)


def llm_judge_params(experiment="refusal"):
    """{host, model, timeout} of the Ollama judge of steered refusal replies, or None (off, or inversion)."""
    j = config["steering"]["llm_judge"]
    return pick(j, "host", "model", "timeout") if j["enabled"] and experiment == "refusal" else None


def get_sweep_llm_judge(wildcards):
    return llm_judge_params(wildcards.experiment)


def get_refusal_tokens(wildcards):
    s = config["steering"]
    return s["refusal_tokens_per_model"].get(wildcards.model, s["refusal_tokens"])


# ---- input functions of rules/belief.smk (kept apart from its rules for snakemake --lint)


def get_belief_inputs(wildcards):
    m, sets = wildcards.model, config["directions"]["eval_sets"]
    return {
        "model": model_card(m),
        "directions": directions_file(m),
        "hidden": [hidden_file(m, s) for s in sets],
        "gens": [generations_file(m, s) for s in sets],
    }


# ---- input functions of rules/report.smk (kept apart from its rules for snakemake --lint)

# the rule that writes each per-model table the claims and the paper's layout read
TABLE_RULES = {
    "table1_post_instruction": "refusal_tables",
    **{n: "geometry" for n in ("clustering", "clustering_positions", "beliefs", "cosine_by_layer")},
    "fig4_steering_refusal": "steering_report",
    "fig5_reply_inversion": "steering_report",
    "fig6_group_means": "fig6_jailbreaks",
    "table3_guards": "table3_guards",
}
# input name of rule claims -> table
CLAIM_TABLES = {"table1": "table1_post_instruction", "beliefs": "beliefs", "fig4": "fig4_steering_refusal",
                "fig5": "fig5_reply_inversion", "fig6": "fig6_group_means", "table3": "table3_guards"}


def get_claims_inputs(wildcards):
    """Every table a claim reads (the fine-tuning attack's where organism.attack is on), and the hidden states
    the claims' bootstrap intervals resample."""
    m = wildcards.model
    out = {
        **get_direction_inputs(wildcards),
        **get_geometry_inputs(wildcards),
        **{key: table_file(TABLE_RULES[name], name, m) for key, name in CLAIM_TABLES.items()},
    }
    if m in ATTACK_SOURCES:
        out.update(attack=table_file("finetune_attack", "finetune_attack", m),
                   attack_layers=table_file("finetune_attack", "finetune_attack_layers", m))
    return out


def get_claims_why(wildcards):
    """Why a claim's data is absent: Table 3 sets skipped, Llama Guard 3 off, no category set, no attack."""
    why = {name: reason for name, reason in GUARD_SKIPPED.items()}
    if not GUARD["llama_guard"]["enabled"]:
        why["llama_guard3"] = "Llama Guard 3 not run (guard.llama_guard.enabled: false; it needs an Ollama server with llama-guard3:8b)"
    if not config["directions"].get("category_set"):
        why["categories"] = "no category set configured (directions.category_set)"
    if wildcards.model not in ATTACK_SOURCES:
        why["attack"] = "the fine-tuning attack is off (organism.attack.enabled: false)"
    return why


def get_paper_table_inputs(wildcards):
    m = wildcards.model
    names = ["table1_post_instruction", "clustering", "clustering_positions", "beliefs", "cosine_by_layer",
             "fig4_steering_refusal", "fig5_reply_inversion", "fig6_group_means", "table3_guards"]
    out = {n: table_file(TABLE_RULES[n], n, m) for n in names}
    if m in ATTACK_SOURCES:
        out.update({n: table_file("finetune_attack", n, m) for n in ("finetune_attack", "finetune_attack_layers")})
    out["claims"] = expand(rules.claims.output.csv, model=m)[0]
    return out


def outputs_named(rule, *names, models=ANALYSIS_MODELS):
    """The outputs of rule `rule` (rules.X.output) whose file name is one of `names`, for every model in
    `models` (the named paper targets of rules/targets.smk); a name the rule does not write is an error."""
    pats = [f for f in getattr(rules, rule).output if os.path.basename(f) in names]
    missing = sorted(set(names) - {os.path.basename(f) for f in pats})
    if missing:
        raise ValueError(f"rule {rule} declares no output {', '.join(missing)}")
    return expand(pats, model=models)


def get_index_inputs(wildcards):
    """Every final output but the index itself (read when the DAG is built: after every rule file has added its own)."""
    return [t for t in dict.fromkeys(map(str, FINAL_TARGETS)) if t != "results/index.md"]


# ---- resources from the model (harmref/resources.py): memory per model job, retries, the dry run's costs

from harmref import resources as hres

CLUSTER = config["cluster"]
_MODEL_SIZES = {}


def model_spec(model):
    """A model's entry; a model derived from another (the fine-tuning attack's) has its base's size."""
    derived = globals().get("ATTACKED_MODELS", {}).get(model)
    if derived:  # in MODELS too (as attack_from + n_pairs): its size is the attacked model's
        return {"tune_from": derived["attack_from"]}
    return MODELS.get(model, {})


def model_size(model):
    """Parameters and config of `model`, read once without weights (None when no config.json is at hand)."""
    if model not in _MODEL_SIZES:
        _MODEL_SIZES[model] = hres.model_size(model, model_spec(model), model_card(model), MODELS)
    return _MODEL_SIZES[model]


def model_request(model, kind="infer"):
    spec = model_spec(model)
    rt = runtime_params(spec["tune_from"] if "tune_from" in spec and kind == "train" else model)
    if kind == "train":
        tr = config["organism"]["train"]
        return hres.request(model_size(model), rt, "train", tr["batch_size"], train_mode=tr["mode"])
    return hres.request(model_size(model), rt, "infer", rt["batch_size"], config["generation"]["max_new_tokens"])


def model_mem_mb(kind="infer"):
    """`resources: mem_mb` of the jobs that load {model}, from its size, × the attempt (SLURM retries)."""

    def mem_mb(wildcards, attempt):
        return model_request(wildcards.model, kind).mem_mb * attempt

    return mem_mb


def model_gpu_mem_mb(kind="infer"):
    """`resources: gpu_mem_mb`: GPU memory of a job of {model} (weights + activations at the batch)."""

    def gpu_mem_mb(wildcards):
        return model_request(wildcards.model, kind).gpu_mem_mb

    return gpu_mem_mb


def attempt_batch_size(wildcards, attempt):
    """`resources: batch_size`: runtime.batch_size halved on each retry; runlog.start hands it to the script."""
    return max(1, runtime_params(wildcards.model)["batch_size"] // 2 ** (attempt - 1))


def set_size(name):
    """Prompts of a set, for the estimates: its `n`, else the built file's lines, else the nanoGCG n."""
    if name in GCG_SETS:
        return GCG["n"]
    built = f"results/data/{name}.jsonl"
    if os.path.exists(built):
        with open(built, "rb") as f:
            return sum(1 for _ in f)
    return DATASETS.get(name, {}).get("n") or 500


def job_gpu_seconds(rule, wildcards):
    size = model_size(wildcards["model"])
    n_layers = size.n_layers if size else 32
    return hres.gpu_seconds(hres.job_tokens(rule, dict(wildcards), config, set_size, n_layers), size, CLUSTER)


def model_runtime(rule):
    """`resources: runtime` (minutes) of a per-set model job: 3 × the estimate, ≥ 15 min, × the attempt.
    Grouped on SLURM (profiles/slurm group-components), a group asks for the sum of its jobs' runtimes."""

    def runtime(wildcards, attempt):
        return hres.runtime_minutes(job_gpu_seconds(rule, wildcards), attempt) or 60 * attempt

    return runtime


def check_slurm_account():
    """A SLURM profile whose account is still the placeholder fails here, before any sbatch."""
    dr = workflow.resource_settings.default_resources
    args = list(dr.args) if dr is not None and dr.args else []
    per_rule = [f"{k}={v.value}" for res in workflow.resource_settings.overwrite_resources.values() for k, v in res.items()]
    for arg in args + per_rule:
        key, _, value = str(arg).partition("=")
        if key.strip() == "slurm_account" and value.strip().strip("'\"") == "CHANGE_ME":
            raise ValueError(
                "profiles/slurm: slurm_account is still the placeholder CHANGE_ME. Set your account in "
                "default-resources (list yours with `sacctmgr show assoc user=$USER format=account`), in a copy "
                "of the profile, or delete the line on a cluster without accounts (docs/cluster.md, step 1)")


if workflow.is_main_process:
    check_slurm_account()


def dry_run_summary():
    """After a dry run: the jobs, the GPU jobs, the sbatch jobs (groups count once) and the GPU-hour estimate."""
    if not workflow.dryrun or not workflow.is_main_process or workflow.dag is None:
        return
    try:
        jobs = list(workflow.dag.needrun_jobs(exclude_finished=False))
        groups = getattr(workflow.dag, "_group", {})
        sizes = {m: model_size(m) for m in {j.wildcards_dict.get("model") for j in jobs} - {None}}
        lines = hres.dry_run_report(jobs, groups, sizes,
                                    model_request, job_gpu_seconds, CLUSTER, workflow._localrules)
    except Exception as e:  # the summary must never hide Snakemake's own result
        lines = [f"harmref: no cost estimate ({type(e).__name__}: {e})"]
    print("\n".join(lines), flush=True)


import atexit

atexit.register(dry_run_summary)
