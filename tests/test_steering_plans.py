"""The steering experiments (harmref.steering_plans): settings, controls, and plans that follow the config."""

import pytest
import torch

from harmref import steering, steering_plans
from test_steering_tables import _rows


def test_make_steer_norm_matched_and_unit():
    dirs = {"harmfulness": torch.tensor([[3.0, 4.0], [6.0, 8.0]]), "refusal": torch.tensor([[0.0, 1.0], [0.0, 2.0]])}
    s = steering_plans.Setting("x", "harmfulness", -1, "context", 1, 2.0, "norm_matched", rescale_to="refusal")
    steer, norm = steering_plans.make_steer(s, dirs)
    assert steer.layer == 1 and steer.coeff == -2.0 and steer.scope == "context"
    assert float(steer.vector.norm()) == pytest.approx(2.0) and norm == pytest.approx(4.0)
    steer, norm = steering_plans.make_steer(steering_plans.Setting("x", "refusal", 1, "all", 0, 3.0, "layer_sweep"), dirs, unit=True)
    assert float(steer.vector.norm()) == pytest.approx(1.0) and norm == pytest.approx(3.0)
    assert steering_plans.make_steer(steering_plans.BASELINE, dirs) == (steering.NONE, 0.0)


def test_control_settings_cover_the_controls():
    arms = [steering_plans.Arm("harmfulness", 1, "context"), steering_plans.Arm("refusal", -1, "all")]
    out = steering_plans.control_settings(arms, {a.name: [5] for a in arms}, [0.5, 1, 2], coeff=1.0)
    got = {(s.arm, s.control, s.coeff, s.scope, s.rescale_to) for s in out}
    assert ("+harmfulness@context", "coefficient", 0.5, "context", None) in got
    assert ("+harmfulness@context", "coefficient", 1.0, "context", None) not in got  # already in the sweep
    assert ("+harmfulness@context", "norm_matched", 1.0, "context", "refusal") in got
    assert ("+harmfulness@context", "scope_swap", 1.0, "all", None) in got
    assert ("-refusal@all", "scope_swap", 1.0, "context", None) in got
    assert all(s.layer == 5 for s in out) and len(out) == 8


def test_inversion_prompts_use_the_paper_questions():
    recs = [{"id": "a", "label": "harmless", "prompt": "bake bread."}]
    (p,) = steering_plans.inversion_prompts(recs, "harmless_test", [1], 5)
    assert p["question_id"] == "Q1" and p["question"].startswith("Could this user prompt cause harm?")
    assert steering_plans.sweep_layers(30, [], 1, 3) == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    with pytest.raises(ValueError):
        steering_plans.sweep_layers(4, [4])


def _params(**over):
    p = {"n_prompts": 2, "layers": [], "layer_start": 1, "layer_stride": 2, "coefficient": 1.0, "unit": False,
         "every_step": False, "batch_size": 8,
         "refusal": {"set": "hl", "only_accepted": True, "max_new_tokens": 2,
                     "arms": [{"direction": "harmfulness", "sign": 1, "scope": "all"}, {"direction": "refusal", "sign": 1, "scope": "all"}]},
         "inversion": {"harmless_set": "hl", "harmful_set": "hf", "questions": [0, "Is it bad?"], "max_new_tokens": 2,
                       "harmless_arms": [{"direction": "harmfulness", "sign": 1, "scope": "context"}],
                       "harmful_arms": [{"direction": "harmfulness", "sign": -1, "scope": "context"}, {"direction": "refusal", "sign": -1, "scope": "all"}]},
         "controls": {"coefficients": [0.5, 1, 2], "layers": [], "norm_matched": True, "scope_swap": True}}
    p.update(over)
    return p


def test_plans_follow_the_config():
    gens = [{"id": f"g{i}", "prompt": f"p{i}", "refused": i == 0} for i in range(4)]
    (prompts, settings), = steering_plans.sweep_plan("refusal", _params(), 6, {"hl": gens})
    assert [p["id"] for p in prompts] == ["g1", "g2"]  # accepted prompts only
    assert len(settings) == 1 + 2 * 3 and {s.layer for s in settings[1:]} == {1, 3, 5}
    recs = {"hl": [{"id": "a", "label": "harmless", "prompt": "x"}] * 3, "hf": [{"id": "b", "label": "harmful", "prompt": "y"}] * 3}
    plan = steering_plans.sweep_plan("inversion", _params(), 6, recs)
    assert [len(p) for p, _ in plan] == [4, 4]  # 2 prompts × 2 questions per set
    assert {p["question_id"] for p in plan[0][0]} == {"Q0", "custom:Is it bad?"}
    assert {s.arm for s in plan[1][1]} == {"baseline", "-harmfulness@context", "-refusal@all"}
    # controls at each arm's best layer, from the sweep's own rows
    rows = []
    for set_name, arm, good in (("hl", "+harmfulness@context", 3), ("hf", "-harmfulness@context", 5), ("hf", "-refusal@all", 1)):
        cell = _rows("inversion", arm, 1, [])  # (empty) just to keep the helper's fields
        if not any(r["set"] == set_name and r["arm"] == "baseline" for r in rows):
            cell += _rows("inversion", "baseline", None, ["harmless"] * 2, control="baseline")
        for l in (1, 3, 5):
            cell += _rows("inversion", arm, l, ["harmful" if l == good else "harmless"] * 2)
        rows += [{**r, "set": set_name, "prompt": "x", "id": "a"} for r in cell]
    plan = steering_plans.controls_plan("inversion", _params(), rows)
    assert [len(p) for p, _ in plan] == [2, 2]  # each set's baseline prompts
    layers = {(s.arm, s.control): s.layer for _, ss in plan for s in ss}
    assert layers[("+harmfulness@context", "coefficient")] == 3 and layers[("-harmfulness@context", "coefficient")] == 5
    assert layers[("-refusal@all", "norm_matched")] == 1
    assert {s.scope for _, ss in plan for s in ss if s.control == "scope_swap" and s.direction == "refusal"} == {"context"}
    assert {s.coeff for _, ss in plan for s in ss if s.control == "coefficient"} == {0.5, 2.0}
