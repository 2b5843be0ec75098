"""Continuous scores at the first generated position (harmref.token_scores)."""

import math

import pytest
import torch

from harmref import positions, steering, token_scores
from test_steering import INSTRUCTIONS, tiny  # noqa: F401  (tiny: a fixture)


def test_token_scores_match_a_plain_forward(tiny):
    model, tok, fmt = tiny
    inv = token_scores.TokenScore.from_strings(tok, "inv", ["Certainly"], ["No"])
    ref = token_scores.TokenScore.from_strings(tok, "ref", ["I", "Sorry", "As"])
    out = steering.run_sweep(model, tok, fmt, INSTRUCTIONS, [steering.NONE] * 3, 1, scores=(inv, ref))
    batch = positions.encode(tok, fmt, INSTRUCTIONS)
    with torch.no_grad():
        lp = torch.log_softmax(model(**batch.model_inputs()).logits[:, -1].double(), -1)
    c, n = tok("Certainly", add_special_tokens=False)["input_ids"][0], tok("No", add_special_tokens=False)["input_ids"][0]
    ids = sorted({tok(s, add_special_tokens=False)["input_ids"][0] for s in ("I", "Sorry", "As")})
    for b in range(3):
        assert out[b]["inv"] == pytest.approx(float(lp[b, c] - lp[b, n]), abs=1e-4)
        p = float(lp[b, ids].exp().sum())
        assert out[b]["ref"] == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
    with pytest.raises(ValueError):
        token_scores.TokenScore.from_strings(tok, "bad", ["No"], ["Nope"])  # same first token
