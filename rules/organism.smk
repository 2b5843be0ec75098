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
        data=ORGANISM["data"],
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
        train=ORGANISM["train"],
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


rule organism_eval:
    """The organism against its base model: refusal per held-out set, reply-inversion accuracy per
    question, answer samples."""
    input:
        unpack(get_eval_generations),
        organism=get_model_card,
        base=get_base_card,
    output:
        refusal=multiext("results/{model}/tables/organism_refusal", ".csv", ".md"),
        inversion=multiext("results/{model}/tables/inversion_accuracy", ".csv", ".md"),
        predictions="results/{model}/organism/inversion_predictions.jsonl",
        samples="results/{model}/organism/samples.md",
    params:
        names=lambda wc: {"base": base_of(wc.model), "organism": wc.model},
        eval=pick(ORGANISM["eval"], "targets", "inversion_n", "inversion_max_new_tokens", "sample_n", "sample_max_new_tokens"),
        trained=ORGANISM["data"]["inversion_questions"],
        runtime=get_runtime,
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
    log:
        "logs/organism_eval/{model}.log",
    benchmark:
        "results/benchmarks/organism_eval/{model}.tsv"
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
        "../workflow_scripts/organism_eval.py"


rule attack_pairs:
    input:
        base=get_base_card,
        harmful=lambda wc: f"results/data/{ORGANISM['harmful']}.jsonl",
    output:
        "results/{model}/finetune_attack/pairs.jsonl",
    params:
        attack=ORGANISM["attack"],
        runtime=get_base_runtime,
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        seed=config["seed"],
    log:
        "logs/attack_pairs/{model}.log",
    benchmark:
        "results/benchmarks/attack_pairs/{model}.tsv"
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
        "../workflow_scripts/attack_pairs.py"


rule finetune_attack:
    input:
        organism=get_model_card,
        pairs=rules.attack_pairs.output[0],
        directions="results/{model}/directions/directions.safetensors",
        prompts=lambda wc: [f"results/data/{s}.jsonl" for s in ORGANISM["attack"]["eval_sets"]],
    output:
        table=multiext("results/{model}/tables/finetune_attack", ".csv", ".md"),
        layers=multiext("results/{model}/tables/finetune_attack_layers", ".csv", ".md"),
        figure=report("results/{model}/figures/fig7_finetune_attack.png", caption="../report/fig7_finetune_attack.rst", category=figure_section("fig7_finetune_attack"), subcategory="{model}"),
        responses="results/{model}/finetune_attack/responses.jsonl",
    params:
        attack=ORGANISM["attack"],
        train=ORGANISM["train"],
        runtime=get_runtime,
        normalise_endings=get_normalise_endings,
        generation=config["generation"],
        before=config["hidden"]["positions_before"],
        middle_layers=config["directions"]["middle_layers"],
        seed=config["seed"],
    log:
        "logs/finetune_attack/{model}.log",
    benchmark:
        "results/benchmarks/finetune_attack/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, TUNED_MODELS)) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb("train"),
        gpu_mem_mb=model_gpu_mem_mb("train"),
        batch_size=attempt_batch_size,
        runtime=120,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/finetune_attack.py"


_TUNED_ANALYSED = [m for m in ANALYSIS_MODELS if m in TUNED_MODELS]
FINAL_TARGETS.extend(expand(rules.organism_eval.output, model=_TUNED_ANALYSED))
FINAL_TARGETS.extend(expand(rules.finetune_attack.output, model=_TUNED_ANALYSED))
