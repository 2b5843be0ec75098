# Every analysed tuned organism side by side (issue 17, "the two organisms side by side"): one long table
# and its markdown, from tables the other rules wrote (harmref/organism_compare.py, docs/organism_compare.md).
# Included after rules/report.smk: it reads the claims. `snakemake results/organisms.md` builds it alone.

# the analysed models with tune_from: (rules/common.smk); none → the rule is asked for nothing
ORGANISM_COMPARE_MODELS = [m for m in ANALYSIS_MODELS if m in TUNED_MODELS]


rule organism_compare:
    """Every analysed tuned organism side by side: refusal, Table 1, Fig 2 clustering, reply inversion,
    Fig 5 steering, stated belief vs behaviour, training cost, claims (results/organisms.{csv,md})."""
    input:
        # one file per model, in ORGANISM_COMPARE_MODELS order; the names are harmref.organism_compare.SECTIONS
        refusal=[table_file("refusal_tables", "refusal_rates", m) for m in ORGANISM_COMPARE_MODELS],
        table1=[table_file("refusal_tables", "table1_post_instruction", m) for m in ORGANISM_COMPARE_MODELS],
        clustering=[table_file("geometry", "clustering", m) for m in ORGANISM_COMPARE_MODELS],
        inversion=[table_file("organism_eval", "inversion_accuracy", m) for m in ORGANISM_COMPARE_MODELS],
        steering=[table_file("steering_report", "fig5_reply_inversion", m) for m in ORGANISM_COMPARE_MODELS],
        belief=[table_file("stated_belief", "belief_vs_behaviour", m) for m in ORGANISM_COMPARE_MODELS],
        training=expand(rules.safety_tune.output.recipe, model=ORGANISM_COMPARE_MODELS),
        claims=expand(rules.claims.output.csv, model=ORGANISM_COMPARE_MODELS),
    output:
        csv="results/organisms.csv",
        md="results/organisms.md",
    params:
        models=ORGANISM_COMPARE_MODELS,
        middle_layers=config["directions"]["middle_layers"],
    log:
        "logs/organism_compare.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/organism_compare.py"


if ORGANISM_COMPARE_MODELS:
    FINAL_TARGETS.extend(rules.organism_compare.output)
