# Behaviour: greedy responses, judged refused / accepted; Table 1 and refusal rates.


rule generate:
    input:
        model=get_model_card,
        prompts="results/data/{dataset}.jsonl",
    output:
        "results/{model}/generations/{template}/{dataset}.jsonl",
        sidecar="results/{model}/generations/{template}/{dataset}.json",
    params:
        runtime=get_runtime,
        normalise_endings=get_normalise_endings,
        generation=config["generation"],
    log:
        "logs/generate/{model}/{template}/{dataset}.log",
    benchmark:
        "results/benchmarks/generate/{model}/{template}/{dataset}.tsv"
    threads: MODEL_THREADS
    group:
        "sets_{model}"
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=model_runtime("generate"),
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/generate.py"


rule refusal_tables:
    input:
        chat=get_generations,
        pairs=get_nopost_pairs,
    output:
        rates=multiext("results/{model}/tables/refusal_rates", ".csv", ".md"),
        table1=multiext("results/{model}/tables/table1_post_instruction", ".csv", ".md"),
    log:
        "logs/refusal_tables/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/refusal_tables.py"


FINAL_TARGETS.extend(
    expand(rules.refusal_tables.output, model=ANALYSIS_MODELS)
)
