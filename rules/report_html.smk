# The HTML report (`snakemake --report results/report.html`): every table of a model as an HTML page in
# results/{model}/report/, each in the paper section it belongs to (harmref/report.py), and the claims
# fragment the first page (report/workflow.rst) includes. Figures are marked report() in the rules that
# draw them. Included last, so FINAL_TARGETS already lists every table. One job per model.
from harmref import report as harmref_report


rule report_pages:
    """Every table of a model as an HTML page of the Snakemake report, and the claims fragment of
    its first page."""
    input:
        lambda wc: list(harmref_report.sources(FINAL_TARGETS, wc.model).values()),
    output:
        pages=report(
            directory("results/{model}/report"),
            patterns=["{name}.html"],
            caption="../report/table.rst",
            category=lambda wc: harmref_report.section_of(wc.name),
            subcategory="{model}",
        ),
        claims="results/{model}/claims_summary.html",
    params:
        sources=lambda wc: harmref_report.sources(FINAL_TARGETS, wc.model),
        captions=lambda wc: {n: harmref_report.caption_of(n, p) for n, p in harmref_report.sources(FINAL_TARGETS, wc.model).items()},
    log:
        "logs/report_pages/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/report_pages.py"


FINAL_TARGETS.extend(expand(rules.report_pages.output, model=ANALYSIS_MODELS))


# the paper's layout with every analysed model side by side (results/paper_tables.md, rules/report.smk)
rule report_paper_tables_all:
    """The paper's tables with every analysed model side by side, as a page of the report's first section."""
    input:
        "results/paper_tables.md",
    output:
        report(
            "results/report_paper_tables.html",
            caption="../report/paper_tables_all.rst",
            category=harmref_report.SECTIONS["claims"],
            subcategory="all analysed models",
        ),
    log:
        "logs/report_paper_tables_all.log",
    localrule: True
    run:
        harmref_report.write_table_html(input[0], output[0], "the paper's tables, every analysed model")


if "results/paper_tables.md" in map(str, FINAL_TARGETS):
    FINAL_TARGETS.extend(rules.report_paper_tables_all.output)
