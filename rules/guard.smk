# Latent Guard and guard baselines (paper §5.1, Table 3, Fig 6).
# Per model: Δharmful / Δrefuse of every test prompt, Table 3, the Fig 6 jailbreak scatter.
# Text-only guards (MiniLM, Llama Guard 3) do not depend on the model: results/text_guards/.

# GUARD (config["guard"]) and the Table 3 test sets (GUARD_TESTS, GUARD_SKIPPED, GUARD_SETS): rules/common.smk


rule latent_guard:
    """Latent Guard (§5.1): Δharmful / Δrefuse of every Table 3 test prompt, and the guard artefact
    (guard.json) that harmref guard check loads."""
    input:
        unpack(get_latent_guard_inputs),
    output:
        scores="results/{model}/guard/scores.jsonl",
        centroids="results/{model}/guard/centroids.safetensors",
        metrics="results/{model}/guard/latent_guard.json",
        # the self-describing artefact: `harmref guard check --guard results/{model}/guard "prompt"`
        guard="results/{model}/guard/guard.json",
    params:
        sets=get_guard_sets,
        augment=GUARD["augment"],
        layers=GUARD["layers"],
        threshold=GUARD["threshold"],
        runtime=get_runtime,
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        storage_dtype=config["hidden"]["storage_dtype"],
        directions=pick(config["directions"], "harmful", "harmless", "harmful_centroid", "min_group"),
        max_new_tokens=GENERATION["max_new_tokens"],
        judge=GENERATION["judge"],
    log:
        "logs/latent_guard/{model}.log",
    localrule: True
    resources:
        mem_mb=8000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/latent_guard.py"


rule gcg_attack:
    """nanoGCG adversarial suffixes optimised against the model itself: the prompt set
    jb_gcg.{model} (guard.gcg, off by default)."""
    input:
        model=get_model_card,
        goals=prompts_file(GCG["goals"]),
    output:
        f"results/data/{GCG['set']}.{{model}}.jsonl",
    params:
        gcg=pick(GCG, *GCG_SEARCH_KEYS),
        runtime=get_runtime,
        normalise_endings=get_normalise_endings,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
        seed=config["seed"],
    log:
        "logs/gcg_attack/{model}.log",
    benchmark:
        "results/benchmarks/gcg_attack/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, GCG_SETS.values())) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        runtime=720,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/gcg_attack.py"


rule gcg_report:
    """Per nanoGCG goal: the model's refusal of the goal alone, with the initial suffix and with the
    optimised one."""
    input:
        model=get_model_card,
        prompts=rules.gcg_attack.output[0],
        gcg_gens=lambda wc: generations_file(wc.model, model_set(GCG["set"], wc.model)),
        goal_gens=lambda wc: generations_file(wc.model, GCG["goals"]),
    output:
        multiext("results/{model}/tables/gcg_attack", ".csv", ".md"),
    params:
        optim_str_init=GCG["optim_str_init"],
        max_new_tokens=GENERATION["max_new_tokens"],
        judge=GENERATION["judge"],
        ollama_judge=get_ollama_judge(),
        runtime=get_runtime,
        system_prompt=config["generation"]["system_prompt"],
        template_date=config["generation"]["template_date"],
    log:
        "logs/gcg_report/{model}.log",
    benchmark:
        "results/benchmarks/gcg_report/{model}.tsv"
    threads: MODEL_THREADS
    wildcard_constraints:
        model="|".join(map(re.escape, GCG_SETS.values())) or "NONE",
    resources:
        gpu=1,
        mem_mb=model_mem_mb(),
        gpu_mem_mb=model_gpu_mem_mb(),
        batch_size=attempt_batch_size,
        runtime=60,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/gcg_report.py"


rule minilm_guard:
    """The MiniLM text-classifier baseline of Table 3, trained on guard.train, scoring every guard
    test set."""
    input:
        train=[prompts_file(s) for s in GUARD["train"]],
        tests=[prompts_file(s) for s in text_guard_sets()],
    output:
        "results/text_guards/minilm.jsonl",
    params:
        sets=text_guard_sets(),
        C=GUARD["minilm"]["C"],
        seed=config["seed"],
    log:
        "logs/minilm_guard/minilm_guard.log",
    benchmark:
        "results/benchmarks/minilm_guard/minilm_guard.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=2000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/minilm_guard.py"


rule llama_guard:
    """Llama Guard 3 verdicts (through Ollama) on one prompt set: a Table 3 baseline
    (guard.llama_guard, off by default)."""
    input:
        rules.build_dataset.output[0],
    output:
        "results/text_guards/llama_guard3/{dataset}.jsonl",
    params:
        host=GUARD["llama_guard"]["host"],
        model=GUARD["llama_guard"]["model"],
        timeout=GUARD["llama_guard"]["timeout"],
    log:
        "logs/llama_guard/{dataset}.log",
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/llama_guard.py"


rule table3_guards:
    """Table 3: accuracy of the Latent Guard, the refusal-based and the text guards on each test
    set, and each latent score's AUROC."""
    input:
        unpack(get_text_guards),
        scores=rules.latent_guard.output.scores,
    output:
        table=multiext("results/{model}/tables/table3_guards", ".csv", ".md"),
        auroc=multiext("results/{model}/tables/guard_auroc", ".csv", ".md"),
        predictions="results/{model}/guard/predictions.jsonl",
    params:
        sets=get_guard_sets,
        tests=get_guard_tests,
        skipped=GUARD_SKIPPED,
    log:
        "logs/table3_guards/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/table3_guards.py"


rule fig6_jailbreaks:
    """Fig 6: Δharmful vs Δrefuse of the jailbreak prompts beside the refused-harmful reference, and
    the group means."""
    input:
        scores=rules.latent_guard.output.scores,
    output:
        figure=report("results/{model}/figures/fig6_jailbreaks.png", caption="../report/fig6_jailbreaks.rst", category=figure_section("fig6_jailbreaks"), subcategory="{model}"),
        means=multiext("results/{model}/tables/fig6_group_means", ".csv", ".md"),
    params:
        tests=get_guard_tests,
        skipped=GUARD_SKIPPED,
    log:
        "logs/fig6_jailbreaks/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/fig6_jailbreaks.py"


FINAL_TARGETS.extend(
    expand([*rules.table3_guards.output, *rules.fig6_jailbreaks.output], model=ANALYSIS_MODELS)
)
FINAL_TARGETS.extend(expand(rules.gcg_report.output, model=GCG_SETS.values()))
