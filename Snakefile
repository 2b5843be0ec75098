# harmref: "LLMs Encode Harmfulness and Refusal Separately" (Zhao et al., NeurIPS 2025), reproduced.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


rule all:
    """Every final output: the tables and figures of every analysed model, the claims, the paper's
    tables, the index."""
    input:
        get_final_output,
    default_target: True


include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/behaviour.smk"
include: "rules/hidden.smk"
include: "rules/directions.smk"
include: "rules/guard.smk"
include: "rules/organism.smk"
include: "rules/steering.smk"
include: "rules/belief.smk"
# the claims, the paper's tables beside ours, the results index (after every analysis rule file)
include: "rules/report.smk"
# every analysed tuned organism side by side (results/organisms.{csv,md}; after report.smk: it reads the claims)
include: "rules/compare.smk"
# last: it renders every table the rules above list in FINAL_TARGETS
include: "rules/report_html.smk"
# named targets, one per paper table and figure (`snakemake table1`, `snakemake fig2`, …)
include: "rules/targets.smk"


onsuccess:
    # the run's own accounting: every model rule's benchmark file → one table (harmref/benchmarks.py)
    from harmref import benchmarks

    if benchmarks.summarise("results/benchmarks") is not None:
        print("harmref: time and memory per rule in results/benchmarks/summary_rules.md")
    # the run's last lines: where to start reading
    if os.path.exists("results/index.md"):
        print("harmref: every output of this run, by paper section: results/index.md; the claims: results/*/claims.md")
        print("harmref: the HTML report: snakemake --report results/report.html")
