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
HOST_MEM_FOR_7B = 24000  # MB: 7-9B weights in bfloat16 (15-18 GB) pass through host memory


def rules() -> dict[str, dict]:
    """name -> {file, gpu, local, script} parsed from rules/*.smk (snakefmt layout)."""
    out = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            body = m.group(2)
            gpu = re.search(r"^\s+gpu=(\d+)", body, re.M)
            script = re.search(r"workflow_scripts/(\w+\.py)", body)
            out[m.group(1)] = {
                "file": smk.name,
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
    sized = SLURM.get("set-resources", {})
    unknown = sorted(set(sized) - set(RULES))
    assert not unknown, f"profiles/slurm set-resources names rules that do not exist: {unknown}"
    for name in GPU_RULES:
        assert name in sized, f"GPU rule {name} ({RULES[name]['file']}) has no set-resources entry in profiles/slurm"
        assert sized[name]["mem_mb"] >= HOST_MEM_FOR_7B, name
        assert sized[name]["runtime"] > 0, name


def test_local_profile_runs_one_gpu_job_at_a_time():
    assert LOCAL["cores"] == "all"
    assert LOCAL["resources"]["gpu"] >= 1, "gpu=0 scales GPU jobs down and still runs them"
    assert "executor" not in LOCAL


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    wd = tmp_path_factory.mktemp("slurm_dry")
    config = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    config["data_root"] = str(ROOT / "data")
    (wd / "config").mkdir()
    (wd / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
           "--profile", str(ROOT / "profiles/slurm"), "--workflow-profile", "none", "-n"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def test_slurm_dry_run_requests_gpus_for_gpu_rules_only(slurm_dry_run):
    jobs = re.findall(r"^(rule|localrule) (\w+):\n(.*?)^\s+resources: ([^\n]*)", slurm_dry_run, re.M | re.S)
    assert jobs
    seen_gpu = set()
    for _, name, _, resources in jobs:
        res = dict(kv.split("=", 1) for kv in resources.split(", "))
        assert res.get("slurm_account") == SLURM["default-resources"]["slurm_account"], name
        if name in GPU_RULES:
            seen_gpu.add(name)
            assert res.get("gpu") == "1", (name, resources)
            assert int(res["mem_mb"]) == SLURM["set-resources"][name]["mem_mb"], (name, resources)
        else:
            assert "gpu" not in res, (name, resources)
    assert {"generate", "extract_hidden"} <= seen_gpu


def test_snakemake_lint_is_clean():
    """`snakemake --lint` exits 1 on any lint (e.g. a `def` in a rules file: put it in rules/common.smk)."""
    p = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
