"""The run's own accounting: Snakemake benchmark files → per-job and per-rule tables."""

import pandas as pd

from harmref import benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path, s, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{s}\t0:00:{int(s):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{s / 2}\n")


def test_summarise_groups_jobs_by_rule(tmp_path):
    write(tmp_path / "generate/m/chat/advbench.tsv", 10.0, 900.0)
    write(tmp_path / "generate/m/chat/alpaca.tsv", 30.0, 1200.0)
    write(tmp_path / "extract_hidden/m/advbench.tsv", 5.0, 700.0)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/empty.tsv").write_text("")
    rules = benchmarks.summarise(tmp_path)
    assert list(rules["rule"]) == ["generate", "extract_hidden", "(all)"]
    gen = rules.set_index("rule").loc["generate"]
    assert gen["jobs"] == 2 and gen["total_wall_s"] == 40.0 and gen["max_rss_mb"] == 1200.0
    assert rules.set_index("rule").loc["(all)", "total_wall_s"] == 45.0
    jobs = pd.read_csv(tmp_path / "summary_jobs.csv")
    assert set(jobs["job"]) == {"m/chat/advbench", "m/chat/alpaca", "m/advbench"}
    assert (tmp_path / "summary_rules.md").read_text().count("\n") == 5  # header, rule line, 3 rows


def test_summarise_without_benchmarks_writes_nothing(tmp_path):
    assert benchmarks.summarise(tmp_path) is None
    assert not list(tmp_path.iterdir())
