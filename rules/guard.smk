# Latent Guard and guard baselines (paper §5.1, Table 3, Fig 6).
# Per model: Δharmful / Δrefuse of every test prompt, Table 3, the Fig 6 jailbreak scatter.
# Text-only guards (MiniLM, Llama Guard 3) do not depend on the model: results/text_guards/.

GUARD = config["guard"]


GUARD_TESTS, GUARD_SKIPPED = guard_test_status()
GUARD_SETS = list(dict.fromkeys(t["set"] for t in GUARD_TESTS))


rule latent_guard:
    input:
        unpack(get_latent_guard_inputs),
    output:
        scores="results/{model}/guard/scores.jsonl",
        centroids="results/{model}/guard/centroids.safetensors",
        metrics="results/{model}/guard/latent_guard.json",
    params:
        sets=GUARD_SETS,
        augment=GUARD["augment"],
        layers=GUARD["layers"],
        threshold=GUARD["threshold"],
    log:
        "logs/latent_guard/{model}.log",
    localrule: True
    resources:
        mem_mb=8000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/latent_guard.py"


rule minilm_guard:
    input:
        train=[f"results/data/{s}.jsonl" for s in GUARD["train"]],
        tests=[f"results/data/{s}.jsonl" for s in GUARD_SETS],
    output:
        "results/text_guards/minilm.jsonl",
    params:
        sets=GUARD_SETS,
        C=GUARD["minilm"]["C"],
        seed=config["seed"],
    log:
        "logs/minilm_guard/minilm_guard.log",
    resources:
        mem_mb=2000,
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/minilm_guard.py"


rule llama_guard:
    input:
        "results/data/{dataset}.jsonl",
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
    input:
        unpack(get_text_guards),
        scores=rules.latent_guard.output.scores,
    output:
        table=multiext("results/{model}/tables/table3_guards", ".csv", ".md"),
        auroc=multiext("results/{model}/tables/guard_auroc", ".csv", ".md"),
        predictions="results/{model}/guard/predictions.jsonl",
    params:
        sets=GUARD_SETS,
        tests=GUARD_TESTS,
        skipped=GUARD_SKIPPED,
    log:
        "logs/table3_guards/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/table3_guards.py"


rule fig6_jailbreaks:
    input:
        scores=rules.latent_guard.output.scores,
    output:
        figure="results/{model}/figures/fig6_jailbreaks.png",
        means=multiext("results/{model}/tables/fig6_group_means", ".csv", ".md"),
    params:
        tests=GUARD_TESTS,
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
