"""Local multi-GPU runs: each model job holds its own GPUs (CUDA_VISIBLE_DEVICES), released at exit."""

import os
import subprocess
import sys

import pytest

from harmref import gpus

CHILD = """
import os, sys, time
from harmref import gpus
ids = gpus.claim(1, total=2, lock_dir=sys.argv[1], wait_s=0.5, poll_s=0.1)
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_two_jobs_get_two_gpus_and_a_third_waits(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    a = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True, env=env)
    b = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True, env=env)
    first, second = a.stdout.readline().strip(), b.stdout.readline().strip()
    assert {first, second} == {"0", "1"}
    with pytest.raises(TimeoutError, match="no 1 free GPUs of 2"):
        gpus.claim(1, total=2, lock_dir=tmp_path, wait_s=0.3, poll_s=0.1)
    a.wait(), b.wait()
    assert gpus.claim(2, total=2, lock_dir=tmp_path, wait_s=1) == [0, 1]  # released when the jobs ended
    assert os.environ.pop("CUDA_VISIBLE_DEVICES") == "0,1"
    gpus.release()


def test_a_scheduler_choice_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpus.claim(1, total=4, lock_dir=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.claim(1, total=0, lock_dir=tmp_path) is None  # a CPU machine: nothing to do
    with pytest.raises(RuntimeError, match="asks for 3 GPUs, this machine has 2"):
        gpus.claim(3, total=2, lock_dir=tmp_path)
