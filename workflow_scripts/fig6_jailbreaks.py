"""Rule fig6_jailbreaks: Δharmful vs Δrefuse for behaviour groups and jailbroken prompts (paper Fig 6), group means."""

import pandas as pd

from harmref import guards, io, plots, runlog

log = runlog.start(snakemake)
model = snakemake.wildcards.model
scores = pd.DataFrame(io.read_jsonl(snakemake.input.scores))
tests = snakemake.params.tests
plain = [t["set"] for t in tests if not t.get("jailbreak", False)]
jailbreaks = {t["name"]: t["set"] for t in tests if t.get("jailbreak", False)}
groups = guards.fig6_groups(scores, plain, jailbreaks)
means = guards.group_means(groups, model)
io.write_table(means, snakemake.output.means[0], floatfmt=".4f")
log.info("group means:\n%s", means.to_string())
for name, reason in snakemake.params.skipped.items():
    log.warning("%s %s", name, reason)
io.save_figure(plots.jailbreak_figure(groups, model), snakemake.output.figure)
