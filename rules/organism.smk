# The refusal model organism: a chat model safety-tuned to refuse and to answer the reply-inversion task,
# its evaluation against the base model, and the fine-tuning attack (paper §5.2, Fig 7). docs/organism.md.

# ORGANISM (config["organism"]) and TUNED_MODELS, with their checks: rules/common.smk


rule organism_data:
    """The organism's training examples: refusals of harmful prompts, the base model's own answers
    to harmless ones, reply-inversion examples."""
    input:
        unpack(get_organism_pools),
        base=get_base_card,
    output:
        "results/models/{model}/train_data.jsonl",
    params:
        data=lambda wc: organism_recipe(wc.model)["data"],
        runtime=get_base_runtime,
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        seed=config["seed"],
    log:
        "logs/organism_data/{model}.log",
    benchmark:
        "results/benchmarks/organism_data/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, TUNED_MODELS)) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=60,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/organism_data.py"


rule safety_tune:
    """Safety-tune the base model into the refusal model organism: its weights, card and training
    recipe."""
    input:
        unpack(get_organism_pools),
        base=get_base_card,
        data=rules.organism_data.output[0],
    output:
        card="results/models/{model}/model.json",
        recipe="results/models/{model}/recipe.json",
    params:
        base=lambda wc: base_of(wc.model),
        train=lambda wc: organism_recipe(wc.model)["train"],
        runtime=get_base_runtime,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        seed=config["seed"],
    log:
        "logs/safety_tune/{model}.log",
    benchmark:
        "results/benchmarks/safety_tune/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, TUNED_MODELS)) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb("train"),
        gpu_mem_mb=model_gpu_mem_mb("train"),
        runtime=120,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/safety_tune.py"


rule organism_replies:
    """One model's greedy answers (a tuned organism's, or its base model's) to the reply-inversion
    questions on held-out prompts and to the sample prompts: what organism_eval compares."""
    input:
        model=get_model_card,
        inversion_prompts=lambda wc: [prompts_file(s) for s in ORGANISM["eval"]["inversion_sets"]],
        sample_prompts=lambda wc: [prompts_file(s) for s in ORGANISM["eval"]["sample_sets"]],
    output:
        inversion="results/{model}/organism/inversion_replies.jsonl",
        samples="results/{model}/organism/sample_replies.jsonl",
    params:
        eval=pick(ORGANISM["eval"], "inversion_n", "inversion_max_new_tokens", "sample_n", "sample_max_new_tokens"),
        runtime=get_runtime,
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
    log:
        "logs/organism_replies/{model}.log",
    benchmark:
        "results/benchmarks/organism_replies/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, ORGANISM_EVAL_MODELS)) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=60,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/organism_replies.py"


rule organism_eval:
    """The organism against its base model: refusal per held-out set, reply-inversion accuracy per
    question, answer samples (from both models' generations and organism_replies; no model loaded)."""
    input:
        unpack(get_eval_generations),
        unpack(get_organism_replies),
    output:
        refusal=multiext("results/{model}/tables/organism_refusal", ".csv", ".md"),
        inversion=multiext("results/{model}/tables/inversion_accuracy", ".csv", ".md"),
        predictions="results/{model}/organism/inversion_predictions.jsonl",
        samples="results/{model}/organism/samples.md",
    params:
        names=lambda wc: {"base": base_of(wc.model), "organism": wc.model},
        eval=pick(ORGANISM["eval"], "targets", "sample_max_new_tokens"),
        trained=lambda wc: organism_recipe(wc.model)["data"]["inversion_questions"],
    log:
        "logs/organism_eval/{model}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, TUNED_MODELS)) or "NONE",
    localrule: True
    resources:
        mem_mb=2000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/organism_eval.py"


rule attack_pairs:
    """(harmful instruction, compliant answer) pairs for the fine-tuning attack of an analysed model: its
    base model's own answers (a tuned organism) or its own answers under the reverse refusal direction
    (the paper's recipe; organism.attack.pairs_from)."""
    input:
        unpack(get_attack_pair_inputs),
    output:
        "results/{model}/finetune_attack/pairs.jsonl",
    params:
        attack=pick(ATTACK, "max_new_tokens", "keep_refused", "steer"),
        pairs_from=lambda wc: attack_pairs_from(wc.model),
        source=lambda wc: attack_source(wc.model),
        runtime=lambda wc: runtime_params(attack_source(wc.model)),
        normalise_endings=get_normalise_endings,
        middle_layers=config["directions"]["middle_layers"],
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        seed=config["seed"],
    log:
        "logs/attack_pairs/{model}.log",
    benchmark:
        "results/benchmarks/attack_pairs/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, ATTACK_SOURCES)) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=60,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/attack_pairs.py"


rule attack_train:
    """The attacked model {model}-attack{N}: the analysed model fine-tuned on the first N attack pairs
    (organism.train's mode and LoRA settings, the attack's epochs, batch and lr); weights, card, recipe."""
    input:
        unpack(get_attack_train_inputs),
    output:
        card="results/models/{model}/model.json",
        recipe="results/models/{model}/recipe.json",
    params:
        attack_from=lambda wc: MODELS[wc.model]["attack_from"],
        n_pairs=lambda wc: MODELS[wc.model]["n_pairs"],
        attack=pick(ATTACK, "epochs", "batch_size", "lr"),
        train=ORGANISM["train"],
        runtime=lambda wc: runtime_params(MODELS[wc.model]["attack_from"]),
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        seed=config["seed"],
    log:
        "logs/attack_train/{model}.log",
    benchmark:
        "results/benchmarks/attack_train/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, ATTACKED_MODELS)) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb("train"),
        gpu_mem_mb=model_gpu_mem_mb("train"),
        batch_size=attempt_batch_size,
        runtime=120,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/attack_train.py"


rule finetune_attack:
    """Fig 7 and its tables: acceptance and layerwise Δharmful / Δrefuse of the model and each attacked
    model on the held-out harmful prompts, scored with the unattacked model's centroids."""
    input:
        unpack(get_attack_eval_inputs),
    output:
        table=multiext("results/{model}/tables/finetune_attack", ".csv", ".md"),
        layers=multiext("results/{model}/tables/finetune_attack_layers", ".csv", ".md"),
        figure=report("results/{model}/figures/fig7_finetune_attack.png", caption="../report/fig7_finetune_attack.rst", category=figure_section("fig7_finetune_attack"), subcategory="{model}"),
    params:
        model=lambda wc: wc.model,
        names=lambda wc: attacked_models(wc.model),
        sizes=ATTACK["n_pairs"],
        eval_sets=ATTACK["eval_sets"],
        eval_n=ATTACK["eval_n"],
        middle_layers=config["directions"]["middle_layers"],
    log:
        "logs/finetune_attack/{model}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, ATTACK_SOURCES)) or "NONE",
    localrule: True
    resources:
        mem_mb=2000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/finetune_attack.py"


_TUNED_ANALYSED = [m for m in ANALYSIS_MODELS if m in TUNED_MODELS]
FINAL_TARGETS.extend(expand(rules.organism_eval.output, model=_TUNED_ANALYSED))
FINAL_TARGETS.extend(expand(rules.finetune_attack.output, model=ATTACK_SOURCES))
