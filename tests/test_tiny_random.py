"""models.tiny_random is the same model in every process (the .test workflow and the SLURM test rely on it)."""

import json
import subprocess
import sys

from harmref import models

PROBE = """
import json
from harmref import models
model, tok = models.tiny_random("{template}", seed=0)
print(json.dumps([tok.get_vocab(), tok.encode("How do I bake bread?"), model.model.embed_tokens.weight[:3, :4].tolist()]))
"""


def test_tiny_random_is_identical_across_processes():
    for template in ("chatml", "llama3"):
        model, tok = models.tiny_random(template, seed=0)
        here = [tok.get_vocab(), tok.encode("How do I bake bread?"), model.model.embed_tokens.weight[:3, :4].tolist()]
        out = subprocess.run([sys.executable, "-c", PROBE.format(template=template)], capture_output=True, text=True, timeout=120, check=True)
        there = json.loads(out.stdout)
        assert there[0] == here[0], f"{template}: the vocabulary differs between processes"
        assert there[1:] == here[1:], template
