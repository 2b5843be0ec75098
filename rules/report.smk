# The regenerated paper: the 13 claims of paper.md §7 with computed verdicts (harmref/claims.py), the
# paper's tables and figure data with ours beside them (harmref/paper_layout.py), an index of every output
# and the README's results section. docs/claims.md. Included after every analysis rule file.


rule claims:
    """The paper's 13 measurable claims (§7), each with a verdict computed from this model's tables."""
    input:
        unpack(get_claims_inputs),
    output:
        csv="results/{model}/claims.csv",
        md="results/{model}/claims.md",
    params:
        why=get_claims_why,
        inversion_sets=[config["steering"]["inversion"]["harmless_set"], config["steering"]["inversion"]["harmful_set"]],
        middle_layers=config["directions"]["middle_layers"],
        mode=config["directions"]["harmful_centroid"],
        min_group=config["directions"]["min_group"],
        seed=config["seed"],
    log:
        "logs/claims/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/claims.py"


rule paper_tables:
    """The paper's tables and figure data in its layout, this model's numbers beside the paper's."""
    input:
        unpack(get_paper_table_inputs),
    output:
        "results/{model}/paper_tables.md",
    log:
        "logs/paper_tables/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/paper_tables.py"


rule paper_tables_all:
    """The paper's tables with every analysed model side by side."""
    input:
        tables=expand("results/{model}/paper_tables.md", model=ANALYSIS_MODELS),
        claims=expand("results/{model}/claims.csv", model=ANALYSIS_MODELS),
    output:
        "results/paper_tables.md",
    params:
        models=ANALYSIS_MODELS,
    log:
        "logs/paper_tables/all.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/paper_tables.py"


rule readme_results:
    """The README's results block, rendered from every analysed model's claims."""
    input:
        expand("results/{model}/claims.csv", model=ANALYSIS_MODELS),
    output:
        "results/readme_results.md",
    params:
        models=ANALYSIS_MODELS,
    log:
        "logs/readme_results.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/readme_results.py"


FINAL_TARGETS.extend(expand(rules.claims.output, model=ANALYSIS_MODELS))
FINAL_TARGETS.extend(expand(rules.paper_tables.output, model=ANALYSIS_MODELS))
FINAL_TARGETS.extend([*rules.paper_tables_all.output, *rules.readme_results.output])


rule results_index:
    """An index of every output of the run, by paper section."""
    input:
        get_index_inputs,
    output:
        "results/index.md",
    log:
        "logs/results_index.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/results_index.py"


# appended last; its input function reads FINAL_TARGETS when the DAG is built, after every rule file
FINAL_TARGETS.append(rules.results_index.output[0])
