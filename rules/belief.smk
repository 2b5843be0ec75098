# The model's stated belief (issue 17): the reply-inversion question asked about every held-out prompt,
# its first-token margin crossed with the model's behaviour and with the signs of Δharmful / Δrefuse.


rule stated_belief:
    """The model's stated belief (reply-inversion margin) on every held-out prompt, crossed with its
    behaviour and with Δharmful / Δrefuse."""
    input:
        unpack(get_belief_inputs),
    output:
        tables=expand("results/{{model}}/tables/{name}.{ext}", name=("stated_belief", "belief_vs_behaviour"), ext=("csv", "md")),
        figure=report("results/{model}/figures/belief_vs_behaviour.png", caption="../report/belief_vs_behaviour.rst", category=figure_section("belief_vs_behaviour"), subcategory="{model}"),
    params:
        eval_sets=config["directions"]["eval_sets"],
        runtime=get_runtime,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        questions=config["belief"]["questions"] or config["steering"]["inversion"]["questions"],
        answer_tokens=config["steering"]["answer_tokens"],
        max_new_tokens=config["steering"]["inversion"]["max_new_tokens"],
        layers=config["guard"]["layers"],
        threshold=config["guard"]["threshold"],
    log:
        "logs/stated_belief/{model}.log",
    benchmark:
        "results/benchmarks/stated_belief/{model}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=60,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/stated_belief.py"


FINAL_TARGETS.extend(expand(rules.stated_belief.output, model=ANALYSIS_MODELS))
