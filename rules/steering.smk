# Steering (paper §3.4–3.5): Fig 4 (steer accepted-harmless prompts toward refusal), Fig 5 (reply
# inversion), and the controls (coefficient sweep, norm-matched, swapped scope). Each job is one
# batched sweep: every row of a generate call carries its own layer, vector, coefficient and scope.


wildcard_constraints:
    experiment="refusal|inversion",


rule steer:
    """One batched layer sweep: Fig 4 (a direction added to accepted harmless prompts, refusal) or
    Fig 5 (reply inversion)."""
    input:
        model=get_model_card,
        directions=rules.directions.output[0],
        prompts=get_steer_prompts,
    output:
        "results/{model}/steering/{experiment}.jsonl",
    params:
        runtime=get_runtime,
        steering=get_sweep_params,
        llm_judge=get_sweep_llm_judge,
        refusal_tokens=get_refusal_tokens,
        system_prompt=GENERATION["system_prompt"],
        template_date=GENERATION["template_date"],
        normalise_endings=get_normalise_endings,
    log:
        "logs/steer/{model}/{experiment}.log",
    benchmark:
        "results/benchmarks/steer/{model}/{experiment}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        runtime=120,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/steer.py"


rule steer_controls:
    """Steering controls at each arm's best layer: coefficient sweep, norm-matched and scope-swapped
    directions."""
    input:
        model=get_model_card,
        directions=rules.directions.output[0],
        sweeps=expand(rules.steer.output[0], experiment=("refusal", "inversion"), allow_missing=True),
    output:
        "results/{model}/steering/controls.jsonl",
    params:
        runtime=get_runtime,
        steering=get_control_params,
        llm_judge=llm_judge_params(),
        refusal_tokens=get_refusal_tokens,
        system_prompt=GENERATION["system_prompt"],
        template_date=GENERATION["template_date"],
    log:
        "logs/steer_controls/{model}.log",
    benchmark:
        "results/benchmarks/steer_controls/{model}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        runtime=120,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/steer_controls.py"


STEERING_TABLES = ["fig4_steering_refusal", "fig5_reply_inversion", "steering_controls"]


rule steering_report:
    """The Fig 4, Fig 5 and controls tables and figures, from the sweeps and the controls."""
    input:
        sweeps=rules.steer_controls.input.sweeps,
        controls=rules.steer_controls.output,
    output:
        tables=expand("results/{{model}}/tables/{name}.{ext}", name=STEERING_TABLES, ext=("csv", "md")),
        fig4=report("results/{model}/figures/fig4_steering_refusal.png", caption="../report/fig4_steering_refusal.rst", category=figure_section("fig4_steering_refusal"), subcategory="{model}"),
        fig5=report("results/{model}/figures/fig5_reply_inversion.png", caption="../report/fig5_reply_inversion.rst", category=figure_section("fig5_reply_inversion"), subcategory="{model}"),
        controls=report("results/{model}/figures/steering_controls.png", caption="../report/steering_controls.rst", category=figure_section("steering_controls"), subcategory="{model}"),
    log:
        "logs/steering_report/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/steering_report.py"


FINAL_TARGETS.extend(expand(rules.steering_report.output, model=ANALYSIS_MODELS))
