# Behaviour: greedy replies (generate), labelled refused / accepted (judge); Table 1 and refusal rates.
# Judging is its own cheap rule: a new judge or judge setting reruns it, not the generation.

JUDGE = GENERATION["judge"]


rule generate:
    """Greedy replies of a model to one prompt view, with (chat) or without (nopost) the post-instruction
    tokens; checkpointed batch by batch. Replies only: rule judge labels them."""
    input:
        model=get_model_card,
        view=rules.prompt_view.output.view,
    output:
        replies="results/{model}/replies/{template}/{dataset}.jsonl",
        sidecar="results/{model}/replies/{template}/{dataset}.json",
    params:
        runtime=get_runtime,
        max_new_tokens=GENERATION["max_new_tokens"],
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


rule judge:
    """Refused / accepted verdicts of generation.judge (the paper's 24 phrases, or an Ollama LLM) for one
    set of replies: the generations every analysis reads (id, prompt, label, category, response, refused)."""
    input:
        replies=rules.generate.output.replies,
        sidecar=rules.generate.output.sidecar,
    output:
        generations="results/{model}/generations/{template}/{dataset}.jsonl",
        sidecar="results/{model}/generations/{template}/{dataset}.json",
    params:
        judge=JUDGE,
        ollama_judge=get_ollama_judge(),
    log:
        "logs/judge/{model}/{template}/{dataset}.log",
    localrule: JUDGE == "substring"
    resources:
        mem_mb=1000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/judge.py"


rule refusal_tables:
    """Refusal rate of every generated prompt set, and Table 1 (AdvBench refusal with vs without the
    post-instruction tokens)."""
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
