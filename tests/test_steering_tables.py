"""Summaries of steered generations (harmref.steering_tables): invalid answers leave the denominator, best layers."""

from harmref import steering_tables


def _rows(experiment, arm, layer, answers, score=0.0, control="layer_sweep"):
    key = "answer" if experiment == "inversion" else "refused"
    sc = "inversion_margin" if experiment == "inversion" else "refusal_score"
    return [{"experiment": experiment, "set": "s", "question_id": "Q1" if experiment == "inversion" else None,
             "arm": arm, "control": control, "layer": layer, "coeff": 0.0 if arm == "baseline" else 1.0,
             "rescale_to": None, "norm": 1.0, key: a, sc: score,
             "response": {"harmful": "Certainly.", "harmless": "No.", "invalid": "I'm sorry"}.get(a, "")} for a in answers]


def test_summary_drops_invalid_answers_and_picks_best_layers():
    rows = (_rows("inversion", "baseline", None, ["harmless"] * 4, control="baseline")
            + _rows("inversion", "+harmfulness@context", 1, ["harmful", "harmless", "invalid", "invalid"], 2.0)
            + _rows("inversion", "+harmfulness@context", 4, ["harmful", "harmful", "harmful", "harmless"], 1.0)
            + _rows("inversion", "+harmfulness@context", 7, ["harmful", "invalid", "invalid", "invalid"], 5.0))
    s = steering_tables.summarise(rows)
    l1 = s[s["layer"] == 1].iloc[0]
    assert l1["rate"] == 0.5 and l1["invalid"] == 0.5 and l1["n_valid"] == 2 and l1["baseline_rate"] == 1.0
    assert l1["refusal_text"] == 0.5  # the two invalid replies are refusals
    # layer 7 has 0 % "No" but 3/4 invalid: too few valid answers to be the best layer
    assert steering_tables.best_layers(s) == {("inversion", "s", "+harmfulness@context"): 4}
    ref = steering_tables.summarise(_rows("refusal", "baseline", None, [False] * 3 + [True], control="baseline")
                             + _rows("refusal", "+refusal@all", 2, [True, True, False, True], -1.0))
    assert list(ref["rate"]) == [0.25, 0.75] and list(ref["baseline_rate"]) == [0.25, 0.25]
