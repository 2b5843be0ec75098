# Model cards: results/models/{model}/model.json (+ a safetensors copy for GGUF and random sources).


rule prepare_model:
    """A model's card (its identity and the sha256 of every weight, config and tokenizer file); GGUF
    and random sources become safetensors once."""
    input:
        get_model_source_files,
    output:
        "results/models/{model}/model.json",
    params:
        spec=get_model_source,
        seed=config["seed"],
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, SOURCE_MODELS)) or "NONE",
    resources:
        mem_mb=4000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/prepare_model.py"


rule prompt_view:
    """A model's view of one prompt set: each prompt after the model's ending rule, rendered with its chat
    template (with or without the post-instruction tokens), its token ids and the indices of t_inst and
    t_post-inst. Tokenizer only; rules generate and extract_hidden batch these ids as they are."""
    input:
        model=get_model_card,
        prompts=rules.build_dataset.output[0],
    output:
        view="results/{model}/prompts/{template}/{dataset}.jsonl",
        sidecar="results/{model}/prompts/{template}/{dataset}.json",
    params:
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
    log:
        "logs/prompt_view/{model}/{template}/{dataset}.log",
    localrule: True
    resources:
        mem_mb=2000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/prompt_view.py"
