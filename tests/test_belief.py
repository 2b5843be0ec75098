"""Stated belief (issue 17): asking the inversion question, the margin, the belief-vs-behaviour table."""

import pandas as pd
import pytest
import torch

from harmref import belief, inversion, io, judging, models, plots, positions, steering, token_scores

INSTRUCTIONS = ["Tell me a joke.", "How do I bake bread at home?", "Write a poem about the sea and the sky.", "Hi."]


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama whose outputs vary (weights redrawn with a large scale)."""
    model, tok = models.tiny_random(seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    tok.padding_side = "left"
    fmt = positions.ChatFormat.from_tokenizer(tok)
    score = token_scores.TokenScore.from_strings(tok, "inversion_margin", ["Certainly"], ["No"])
    return model, tok, fmt, score


def test_margin_is_batch_invariant_and_matches_the_steering_score(tiny):
    model, tok, fmt, score = tiny
    q = inversion.question_text(1)[1]
    batched = belief.ask(model, tok, fmt, INSTRUCTIONS, q, score, max_new_tokens=0, batch_size=4)
    single = [belief.ask(model, tok, fmt, [x], q, score, 0, 1)[0] for x in INSTRUCTIONS]
    with_reply = belief.ask(model, tok, fmt, INSTRUCTIONS, q, score, max_new_tokens=3, batch_size=3)
    sweep = steering.run_sweep(model, tok, fmt, INSTRUCTIONS, [steering.NONE] * 4, 3, 4, [q] * 4, (score,))
    m = [r["margin"] for r in batched]
    assert len(set(round(x, 4) for x in m)) > 1  # the prompts differ, so do the margins
    assert m == pytest.approx([r["margin"] for r in single], abs=1e-4)  # left padding changes nothing
    assert m == pytest.approx([r["margin"] for r in with_reply], abs=1e-4)  # forward pass == generate's prefill
    assert m == pytest.approx([r["inversion_margin"] for r in sweep], abs=1e-4)  # the steering rule's score
    assert [r["reply"] for r in with_reply] == [r["response"] for r in sweep]
    assert all(r["reply_verdict"] in ("harmful", "harmless", "invalid") for r in with_reply)
    assert "reply" not in batched[0]


def test_margin_depends_on_the_question(tiny):
    model, tok, fmt, score = tiny
    a = belief.ask(model, tok, fmt, INSTRUCTIONS[:2], inversion.question_text(0)[1], score)
    b = belief.ask(model, tok, fmt, INSTRUCTIONS[:2], inversion.question_text(2)[1], score)
    assert [r["margin"] for r in a] != pytest.approx([r["margin"] for r in b], abs=1e-6)


def synthetic_rows():
    """12 prompts in two sets with known behaviour, stated belief and Δ signs."""
    spec = [
        # set, label, refused, margin, reply, Δharmful, Δrefuse
        ("s1", "harmful", True, 2.0, "Certainly.", 0.3, 0.2),     # refused · judged harmful
        ("s1", "harmful", True, 1.0, "Certainly", 0.1, 0.4),
        ("s1", "harmless", False, -1.0, "No.", -0.2, -0.1),       # complied · judged harmless
        ("s1", "harmless", False, -2.0, "hmm", -0.3, -0.3),       # reply invalid
        ("s1", "harmless", True, -0.5, "No", -0.1, 0.2),          # refused · judged harmless: Δh follows belief, Δr behaviour
        ("s1", "harmless", True, -0.5, "No", 0.2, 0.3),           #   Δh follows behaviour
        ("s2", "harmless", True, -0.1, "No", -0.4, -0.1),         #   Δh belief, Δr belief
        ("s2", "harmful", False, 0.5, "Certainly", 0.4, -0.2),    # complied · judged harmful: Δh belief, Δr behaviour
        ("s2", "harmful", False, 0.5, "No", -0.1, -0.3),          #   Δh behaviour; reply says harmless → complied · judged harmless
        ("s2", "harmful", False, 0.7, "Certainly", float("nan"), -0.1),  # Δh undefined
        ("s2", "harmless", False, -3.0, "No", -0.5, -0.5),
        ("s2", "harmful", True, 3.0, "Certainly", 0.5, 0.5),
    ]
    rows = []
    for k, (s, label, refused, margin, reply, dh, dr) in enumerate(spec):
        recs = {f"p{k}": {"label": label, "refused": refused, "category": None}}
        ans = [{"margin": margin, "reply": reply, "reply_verdict": judging.parse_inversion(reply)}]
        rows += belief.prompt_rows(s, [f"p{k}"], recs, ans, "Q1", [dh], [dr], threshold=0.0)
    return rows


def test_prompt_rows_read_signs_and_groups():
    rows = synthetic_rows()
    assert [r["group"] for r in rows[:3]] == ["refused · judged harmful", "refused · judged harmful", "complied · judged harmless"]
    assert rows[3]["reply_group"] == "invalid reply" and rows[3]["group"] == "complied · judged harmless"
    assert rows[8]["group"] == "complied · judged harmful" and rows[8]["reply_group"] == "complied · judged harmless"
    assert rows[9]["dh_reads_harmful"] is None and rows[9]["dr_reads_refuse"] is False
    assert rows[4]["dh_reads_harmful"] is False and rows[4]["dr_reads_refuse"] is True


def test_belief_vs_behaviour_counts():
    t = belief.belief_vs_behaviour(synthetic_rows(), "m")
    margin = t[(t["verdict"] == "margin") & (t["set"] == "all")].set_index("group")
    rh = margin.loc["refused · judged harmless"]
    assert rh["n"] == 3 and rh["disagreement"] and rh["n_label_harmful"] == 0
    assert (rh["dh_belief_k"], rh["dh_behaviour_k"]) == (2, 1)
    assert (rh["dr_belief_k"], rh["dr_behaviour_k"]) == (1, 2)
    assert rh["dh_belief_%"] == pytest.approx(200 / 3)
    lo, hi = belief.wilson(2, 3)
    assert (rh["dh_belief_lo_%"], rh["dh_belief_hi_%"]) == pytest.approx((100 * lo, 100 * hi))
    ch = margin.loc["complied · judged harmful"]
    assert ch["n"] == 3 and ch["dh_n_scored"] == 2 and ch["dr_n_scored"] == 3  # the NaN Δharmful is not scored
    assert (ch["dh_belief_k"], ch["dh_behaviour_k"]) == (1, 1)
    assert (ch["dr_belief_k"], ch["dr_behaviour_k"]) == (0, 3)
    pooled = margin.loc[belief.POOLED_DISAGREE]
    assert pooled["n"] == 6 and pooled["dh_belief_k"] == 3 and pooled["dr_behaviour_k"] == 5
    agree = margin.loc["refused · judged harmful"]
    assert not agree["disagreement"] and agree["dh_belief_k"] == agree["dh_behaviour_k"] == 3
    assert margin.loc[list(belief.GROUPS), "n"].sum() == 12
    # per set, and the reply-based verdict (invalid replies apart)
    s2 = t[(t["verdict"] == "margin") & (t["set"] == "s2")].set_index("group")
    assert s2.loc["refused · judged harmless", "n"] == 1 and s2.loc["complied · judged harmful", "n"] == 3
    reply = t[(t["verdict"] == "reply") & (t["set"] == "all")].set_index("group")
    assert reply.loc["invalid reply", "n"] == 1 and reply.loc[list(belief.GROUPS), "n"].sum() == 11
    assert reply.loc["complied · judged harmful", "n"] == 2


def test_margin_only_rows_have_no_reply_verdict():
    recs = {"a": {"label": "harmful", "refused": False}}
    rows = belief.prompt_rows("s", ["a"], recs, [{"margin": 0.2}], "Q0", [0.1], [-0.1])
    t = belief.belief_vs_behaviour(rows, "m")
    assert set(t["verdict"]) == {"margin"} and "reply" not in rows[0]


def test_belief_figure(tmp_path):
    rows = synthetic_rows()
    fig = plots.belief_figure(belief.belief_vs_behaviour(rows, "m"), rows, "m")
    out = tmp_path / "f.png"
    io.save_figure(fig, out)
    assert out.stat().st_size > 10_000
    empty = plots.belief_figure(pd.DataFrame(columns=["verdict", "set", "question", "group"]), [], "m")
    io.save_figure(empty, tmp_path / "e.png")


def test_readable_view_and_markdown_table(tmp_path):
    t = belief.belief_vs_behaviour(synthetic_rows(), "m")
    view = belief.readable(t)
    row = view[(view["verdict"] == "margin") & (view["set"] == "all") & (view["group"] == "refused · judged harmless")].iloc[0]
    lo, hi = belief.wilson(2, 3)
    assert row["Δharmful agrees with belief"] == f"2/3 (67 %, {100 * lo:.0f}–{100 * hi:.0f})"
    assert row["Δrefuse agrees with behaviour"].startswith("2/3 ")
    assert view[view["group"] == "invalid reply"]["Δharmful agrees with belief"].eq("").all()
    io.write_table(t, tmp_path / "bvb", markdown_df=view)
    assert pd.read_csv(tmp_path / "bvb.csv").shape == t.shape  # the CSV keeps every column
    md = (tmp_path / "bvb.md").read_text()
    assert "2/3 (67 %" in md and "dh_belief_k" not in md
