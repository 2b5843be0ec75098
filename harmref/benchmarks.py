"""A run's own accounting: Snakemake's per-job `benchmark:` files turned into one table.

Every rule that loads a model writes `results/benchmarks/{rule}/{wildcards…}.tsv` (Snakemake's
columns: s, max_rss, cpu_time, …). `summarise` reads them all and writes one row per job and one
per rule (jobs, total and max wall seconds, max RSS), so the time and memory a run took come from
the workflow itself rather than from a stopwatch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_jobs(root) -> pd.DataFrame:
    """One row per benchmark file under `root`: rule, job (the wildcard path), wall s, max RSS MB, CPU s."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            continue  # the summary itself, or a stray file
        try:
            df = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if df.empty or "s" not in df:
            continue
        last = df.iloc[-1]  # repeat: N benchmarks keep one line per repeat; the last is as good as any
        rows.append({
            "rule": rel.parts[0],
            "job": str(Path(*rel.parts[1:]).with_suffix("")),
            "wall_s": float(last["s"]),
            "max_rss_mb": float(last["max_rss"]) if pd.notna(last.get("max_rss")) else float("nan"),
            "cpu_s": float(last["cpu_time"]) if "cpu_time" in df and pd.notna(last.get("cpu_time")) else float("nan"),
        })
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "max_rss_mb", "cpu_s"])


def by_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total / max wall seconds, max RSS; sorted by total time, with a total row."""
    if jobs.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total_wall_s", "max_wall_s", "max_rss_mb", "share_%"])
    g = jobs.groupby("rule").agg(jobs=("job", "size"), total_wall_s=("wall_s", "sum"), max_wall_s=("wall_s", "max"),
                                 max_rss_mb=("max_rss_mb", "max"))
    g = g.sort_values("total_wall_s", ascending=False).reset_index()
    g["share_%"] = 100 * g["total_wall_s"] / g["total_wall_s"].sum()
    total = {"rule": "(all)", "jobs": int(g["jobs"].sum()), "total_wall_s": g["total_wall_s"].sum(),
             "max_wall_s": g["max_wall_s"].max(), "max_rss_mb": g["max_rss_mb"].max(), "share_%": 100.0}
    return pd.concat([g, pd.DataFrame([total])], ignore_index=True)


def summarise(root="results/benchmarks") -> pd.DataFrame | None:
    """Write `{root}/summary_rules.{csv,md}` and `{root}/summary_jobs.{csv,md}`; None when there is nothing."""
    from .io import write_table

    jobs = read_jobs(root)
    if jobs.empty:
        return None
    rules = by_rule(jobs)
    write_table(jobs.sort_values(["rule", "job"]), Path(root) / "summary_jobs", floatfmt=".1f")
    write_table(rules, Path(root) / "summary_rules", floatfmt=".1f")
    return rules
