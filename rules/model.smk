# Model cards: results/models/{model}/model.json (+ a safetensors copy for GGUF and random sources).


rule prepare_model:
    input:
        get_model_source_files,
    output:
        "results/models/{model}/model.json",
    params:
        spec=lambda wc: MODELS[wc.model],
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
