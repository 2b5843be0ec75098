"""Held-out accuracy of the Δharmful centroid rule per layer at t_inst, with and without ending normalisation.

Base SmolLM2-135M-Instruct (it refuses almost nothing, so centroids use all harmful / all harmless
training prompts). Reads the prompt sets the workflow built (results/data/) and the converted model
(results/models/smollm2-135m/). Usage:
    .venv/bin/python benchmarks/ending_normalisation.py [results]
Writes benchmarks/ending_normalisation.{csv,md}.
"""

import sys
from pathlib import Path

import pandas as pd
import torch

from harmref import activations, datasets, directions, io, models, positions

results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
model, tok = models.load(results / "models/smollm2-135m/model.json", "cpu", "float32")
fmt = positions.ChatFormat.from_tokenizer(tok)
cols = {}
for normalise in (False, True):
    h = {}
    for name in ("harmful_train", "harmless_train", "harmful_test", "harmless_test"):
        prompts = [r["prompt"] for r in datasets.load_prompts(results / f"data/{name}.jsonl", normalise)]
        hs, labels, _ = activations.hidden_states(model, tok, fmt, prompts, before=0, n_post=0, batch_size=16)
        h[name] = hs[:, :, 0]
    mu_h, mu_l = h["harmful_train"].double().mean(0), h["harmless_train"].double().mean(0)
    test = torch.cat([h["harmful_test"], h["harmless_test"]])
    y = torch.tensor([1] * len(h["harmful_test"]) + [0] * len(h["harmless_test"]))
    s = directions.centroid_score(test, mu_h, mu_l)
    key = "normalised" if normalise else "raw"
    cols[f"acc_{key}"] = directions.layer_accuracy(s, y).numpy()
    cols[f"auroc_{key}"] = [directions.auroc(s[:, l], y) for l in range(s.shape[1])]
df = pd.DataFrame({"layer": range(len(cols["acc_raw"])), **cols})
io.write_table(df, Path(__file__).with_name("ending_normalisation"))
print(df.to_markdown(index=False, floatfmt=".3f"))
