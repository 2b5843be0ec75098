"""The .test workflow on a real single-node SLURM through profiles/slurm, compared with a local run.

`.ci/slurm_test.sh` installs Debian's slurm-wlm and munge and starts the daemons, so it needs root
and apt: it runs in CI (CI=true) or when HARMREF_SLURM_TEST=1, and is skipped elsewhere.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WANTED = os.environ.get("CI") == "true" or os.environ.get("HARMREF_SLURM_TEST") == "1"


@pytest.mark.skipif(not WANTED, reason="set HARMREF_SLURM_TEST=1 (needs root + apt) to run the real-SLURM test")
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"), reason="needs root and apt-get")
def test_test_workflow_through_real_slurm_matches_local_run():
    p = subprocess.run(["bash", str(ROOT / ".ci/slurm_test.sh")], cwd=ROOT, capture_output=True, text=True, timeout=2400)
    print(p.stdout[-6000:])
    why = "\n".join(line for line in p.stdout.splitlines() if "FAIL" in line or line.startswith("DIFF"))
    assert p.returncode == 0, f"slurm_test.sh failed:\n{why}\n{p.stdout[-6000:]}\n{p.stderr[-3000:]}"
    assert "SLURM jobs submitted:" in p.stdout and "PASS: local" in p.stdout
