"""profiles/local and profiles/slurm: settings the SLURM plugin needs, every GPU rule sized; lint clean.

The real SLURM run is .ci/slurm_test.sh (needs root and apt); these checks are static plus one dry run.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
LOCAL = yaml.safe_load((ROOT / "profiles/local/config.yaml").read_text())


def rules() -> dict[str, dict]:
    """name -> {file, gpu, local, script} parsed from rules/*.smk (snakefmt layout)."""
    out = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            body = m.group(2)
            gpu = re.search(r"^\s+gpu=(\d+)", body, re.M)
            script = re.search(r"workflow_scripts/(\w+\.py)", body)
            res = re.search(r"^    resources:\n(.*?)(?=^    \S|\Z)", body, re.M | re.S)
            res = res.group(1) if res else ""
            mem = re.search(r"^\s+mem_mb=(\w+)", res, re.M)
            runtime = re.search(r"^\s+runtime=(\w+)", res, re.M)
            group = re.search(r"^    group:\n\s+\"([^\"]+)\"", body, re.M)
            out[m.group(1)] = {
                "file": smk.name,
                "mem": mem.group(1) if mem else None,
                "runtime": runtime.group(1) if runtime else None,
                "group": group.group(1) if group else None,
                "gpu": int(gpu.group(1)) if gpu else 0,
                "local": bool(re.search(r"^\s+localrule: True", body, re.M)),
                "script": ROOT / "workflow_scripts" / script.group(1) if script else None,
            }
    return out


RULES = rules()
GPU_RULES = sorted(name for name, r in RULES.items() if r["gpu"])


def test_rules_parsed():
    assert {"generate", "extract_hidden", "build_dataset"} <= set(RULES)
    assert {"generate", "extract_hidden"} <= set(GPU_RULES)


def test_no_auto_loaded_default_profile():
    assert not (ROOT / "profiles/default").exists(), "Snakemake would apply profiles/default to every run"


def test_rules_that_load_a_model_ask_for_a_gpu():
    for name, r in RULES.items():
        loads = r["script"] is not None and "models.load(" in r["script"].read_text()
        if loads:
            assert r["gpu"] == 1, f"rule {name} ({r['file']}) loads a model: declare resources: gpu=1"
        if r["gpu"]:
            assert not r["local"], f"rule {name} ({r['file']}) needs a GPU but is a localrule"


def test_slurm_profile_has_what_the_plugin_needs():
    assert SLURM["executor"] == "slurm"
    # no accounting database -> sacct fails and the plugin waits forever; squeue works
    assert SLURM["slurm-status-command"] == "squeue"
    # the plugin only uses squeue when MinJobAge >= 3 x this; SLURM's default MinJobAge is 300 s
    assert 3 * SLURM["slurm-init-seconds-before-status-checks"] <= 300
    res = SLURM["default-resources"]
    assert "slurm_account" in res, "explicit account placeholder: the plugin's guessing is broken"
    assert res["mem_mb"] >= 1000, "every job runs a nested Snakemake"
    assert res["runtime"] > 0
    assert SLURM["jobs"] >= 1 and SLURM["latency-wait"] >= 5


def test_slurm_profile_sizes_every_gpu_rule():
    """Memory comes from the model (rules compute mem_mb); runtime from the profile or, for the grouped
    per-set jobs, from the estimate."""
    sized = SLURM.get("set-resources", {})
    unknown = sorted(set(sized) - set(RULES))
    assert not unknown, f"profiles/slurm set-resources names rules that do not exist: {unknown}"
    for name in GPU_RULES:
        assert name in sized, f"GPU rule {name} ({RULES[name]['file']}) has no set-resources entry in profiles/slurm"
        assert "mem_mb" not in sized[name], f"{name}: mem_mb is computed from the model; the profile would override it"
        assert RULES[name]["mem"] == "model_mem_mb", f"rule {name} ({RULES[name]['file']}): mem_mb=model_mem_mb(...)"
        assert sized[name].get("runtime", 0) > 0 or RULES[name]["runtime"] == "model_runtime", name


def test_slurm_profile_groups_retries_and_scopes_the_gpu():
    assert SLURM["retries"] >= 1
    assert SLURM["set-resource-scopes"] == {"gpu": "local"}, "gpu must limit each group job, not the whole run"
    assert SLURM["resources"] == {"gpu": 1}, "the jobs of a group share its one GPU, one after another"
    groups = {RULES[r]["group"] for r in ("generate", "extract_hidden")}
    assert groups == {"sets_{model}"}
    name, _, n = SLURM["group-components"][0].partition("=")
    assert name == "sets_{model}" and int(n) > 1


def test_local_profile_runs_one_gpu_job_at_a_time():
    assert LOCAL["cores"] == "all"
    assert LOCAL["resources"]["gpu"] >= 1, "gpu=0 scales GPU jobs down and still runs them"
    assert "executor" not in LOCAL


def _dry_run(wd, profile, *extra):
    config = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    config["data_root"] = str(ROOT / "data")
    (wd / "config").mkdir(exist_ok=True)
    (wd / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
           "--profile", str(profile), "--workflow-profile", "none", "-n", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory):
    """The .test DAG through profiles/slurm with a real-looking account (the placeholder fails)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    wd = tmp_path_factory.mktemp("slurm_dry")
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = "testacct"
    (wd / "profile").mkdir()
    (wd / "profile/config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    p = _dry_run(wd, wd / "profile")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


def test_the_placeholder_account_fails_the_dry_run_saying_what_to_do(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    assert SLURM["default-resources"]["slurm_account"] == "CHANGE_ME"
    p = _dry_run(tmp_path, ROOT / "profiles/slurm")
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "slurm_account is still the placeholder CHANGE_ME" in out and "sacctmgr show assoc" in out
    assert "submitted" not in out and "Job stats" not in out  # before any job


def _jobs(out):
    """(rule, resources dict) of every job block of a dry run (group members included)."""
    jobs = re.findall(r"^\s*(?:rule|localrule) (\w+):\n(.*?)^\s+resources: ([^\n]*)", out, re.M | re.S)
    return [(name, dict(kv.split("=", 1) for kv in res.split(", "))) for name, _, res in jobs]


def test_slurm_dry_run_requests_gpus_for_gpu_rules_only(slurm_dry_run):
    jobs = _jobs(slurm_dry_run)
    assert jobs
    seen_gpu = set()
    printed = re.search(r"^harmref resources: (?:[\w.-]+, )*tiny(?:, [\w.-]+)*: .* mem_mb=(\d+) \(host\) and gpu_mem_mb=(\d+)", slurm_dry_run, re.M)
    assert printed, slurm_dry_run[-2000:]
    for name, res in jobs:
        assert res.get("slurm_account") == "testacct", name
        if name in GPU_RULES:
            seen_gpu.add(name)
            assert res.get("gpu") == "1", (name, res)
            if name not in ("safety_tune", "finetune_attack") and "tiny" in slurm_dry_run:
                assert int(res["mem_mb"]) >= 3000, (name, res)  # the overhead, at least
        else:
            assert "gpu" not in res, (name, res)
    gen = [res for name, res in jobs if name == "generate"]
    assert gen and all(r["mem_mb"] == printed.group(1) for r in gen)  # the job asks for what the dry run printed
    assert all(r["batch_size"] == "4" for r in gen)  # .test's runtime.batch_size on the first attempt
    assert {"generate", "extract_hidden"} <= seen_gpu


def test_slurm_dry_run_groups_the_per_set_jobs_and_prints_the_costs(slurm_dry_run):
    out = slurm_dry_run
    m = re.search(r"^harmref jobs: (\d+) in the DAG, (\d+) of them GPU jobs; on SLURM (\d+) sbatch jobs "
                  r"\((\d+) group jobs holding (\d+) model jobs, (\d+) single jobs, (\d+) of them GPU jobs\), (\d+) local rules",
                  out, re.M)
    assert m, out[-2000:]
    total, gpu, sbatch, groups, grouped, single, single_gpu, local = map(int, m.groups())
    assert gpu == grouped + single_gpu  # the grouped jobs are GPU jobs
    stats = int(re.search(r"^total\s+(\d+)$", out, re.M).group(1))
    assert total == stats  # Snakemake's own count
    assert groups >= 1 and grouped > groups and sbatch == groups + single
    assert single + grouped + local == total  # every job is local, single or in a group
    per_set = sum(1 for name, _ in _jobs(out) if name in ("generate", "extract_hidden"))
    assert grouped == per_set
    g = re.search(r"^harmref group sets_tiny: (\d+) sbatch job\(s\) of ([\d+]+) model jobs run one after another "
                  r"on one GPU; gpu=1, mem_mb=\d+, runtime ([\d+]+) min", out, re.M)
    assert g, out[-2000:]
    assert int(g.group(1)) == len(g.group(2).split("+")) == len(g.group(3).split("+"))
    assert re.search(r"^harmref GPU-hours \(ESTIMATE, not measured: 312 TFLOP/s bf16 GPU, .*\): [\d.]+ h", out, re.M)


def test_a_retry_doubles_memory_and_halves_the_batch(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = "testacct"
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile/config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    first = {n: r for n, r in _jobs(_dry_run(tmp_path, tmp_path / "profile", "--attempt", "1").stdout) if n == "generate"}
    second = {n: r for n, r in _jobs(_dry_run(tmp_path, tmp_path / "profile", "--attempt", "2").stdout) if n == "generate"}
    assert int(second["generate"]["mem_mb"]) == 2 * int(first["generate"]["mem_mb"])
    assert int(second["generate"]["batch_size"]) == int(first["generate"]["batch_size"]) // 2
    assert int(second["generate"]["runtime"]) == 2 * int(first["generate"]["runtime"])


def test_the_attempts_batch_size_reaches_the_script():
    from types import SimpleNamespace

    from harmref import runlog

    sm = SimpleNamespace(resources=SimpleNamespace(batch_size=8), params=SimpleNamespace(runtime={"batch_size": 32}),
                         attempt=3)
    assert runlog.apply_attempt_batch_size(sm) == 8 and sm.params.runtime["batch_size"] == 8
    plain = SimpleNamespace(resources=SimpleNamespace(), params=SimpleNamespace(runtime={"batch_size": 32}))
    assert runlog.apply_attempt_batch_size(plain) is None and plain.params.runtime["batch_size"] == 32


def test_snakemake_lint_is_clean():
    """`snakemake --lint` exits 1 on any lint (e.g. a `def` in a rules file: put it in rules/common.smk)."""
    p = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
