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
