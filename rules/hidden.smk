# Hidden states: residual stream at every layer, positions t_inst-k … t_post-inst, one forward pass per batch.


rule extract_hidden:
    """Residual-stream hidden states of one prompt set at every layer and positions t_inst-k …
    t_post-inst (the model's chat prompt view), with a sidecar of ids, labels and position tokens."""
    input:
        model=get_model_card,
        view=get_chat_view,
    output:
        tensors="results/{model}/hidden/{dataset}.safetensors",
        sidecar="results/{model}/hidden/{dataset}.json",
    params:
        runtime=get_runtime,
        before=config["hidden"]["positions_before"],
        storage_dtype=config["hidden"]["storage_dtype"],
    log:
        "logs/extract_hidden/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_hidden/{model}/{dataset}.tsv"
    threads: MODEL_THREADS
    group:
        "sets_{model}"
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=model_runtime("extract_hidden"),
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/extract_hidden.py"
