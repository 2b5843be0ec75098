"""The claims' verdict rules on synthetic evidence: holds, does not hold and not measurable, for every claim."""

import numpy as np
import pandas as pd
import pytest
import torch

from harmref import claims, paper, paper_layout
from harmref.claims import FAILS, HOLDS, NOT_MEASURABLE, Evidence

L, POS = 12, ["t_inst-2", "t_inst-1", "t_inst", "post_1", "post_2"]
INST, POST = 2, 4


def verdict(claim, ev):
    row = claims.check(claim, ev)
    assert row["measured"] and row["test"] and row["paper"], row
    return row["verdict"], row["reason"]


# ---------------------------------------------------------------- builders
def table1(with_, without, n=100):
    return pd.DataFrame([{"model": "m", "set": "advbench", "n": n, "refusal_with_post_%": with_, "refusal_without_post_%": without}])


def scores(ah_inst=0.05, rh_inst=-0.05, ah_post=-0.1, rh_post=0.1, other=-0.05, n=40, sd=0.02, n_rh=None, seed=0):
    """Clustering scores [n, L, POS]: the given mean at t_inst / t_post-inst, `other` pattern elsewhere."""
    rng = np.random.default_rng(seed)
    out = {}
    for g, (mi, mp, sign) in {"accepted-harmful": (ah_inst, ah_post, 1), "refused-harmless": (rh_inst, rh_post, -1)}.items():
        k = n if g == "accepted-harmful" or n_rh is None else n_rh
        if k == 0:
            continue
        m = np.full((L, len(POS)), sign * other)  # other positions: the pattern reversed when other < 0
        m[:, INST], m[:, POST] = mi, mp
        out[g] = m[None] + sd * rng.standard_normal((k, L, len(POS)))
    out["refused-harmful"] = 0.1 + sd * rng.standard_normal((n, L, len(POS)))
    return out


def ev_scores(**kw):
    return Evidence(model="m", scores=scores(**kw), positions=POS, inst=INST, middle=(3, 8))


def beliefs(rh_h=-0.05, rh_r=0.05, ah_h=0.05, ah_r=-0.05, n=40, n_rh=None, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g, (h, r, k) in {"refused-harmless": (rh_h, rh_r, n if n_rh is None else n_rh), "accepted-harmful": (ah_h, ah_r, n),
                         "refused-harmful": (0.1, 0.3, n)}.items():
        for i in range(k):
            rows.append({"group": g, "delta_harmful": h + 0.02 * rng.standard_normal(), "delta_refuse": r + 0.02 * rng.standard_normal()})
    return pd.DataFrame(rows)


def fig4(base, harm, ref, n=50, arms=("harmfulness", "refusal")):
    rows = [{"arm": "baseline", "control": "baseline", "layer": None, "rate_%": base, "n": n}]
    for d, peak in (("harmfulness", harm), ("refusal", ref)):
        if d in arms:
            rows += [{"arm": f"+{d}@all", "control": "layer_sweep", "layer": l, "rate_%": peak if l == 5 else base, "n": n} for l in range(L)]
    return pd.DataFrame(rows)


def fig5(set_name, base, arms: dict, n=50, valid=None):
    valid = n if valid is None else valid
    rows = [{"set": set_name, "arm": "baseline", "layer": None, "no_%": base, "n": n, "n_valid": valid}]
    for arm, (extreme, rest) in arms.items():
        rows += [{"set": set_name, "arm": arm, "layer": l, "no_%": extreme if l == 6 else rest, "n": n, "n_valid": valid} for l in range(L)]
    return pd.DataFrame(rows)


def fig6(jb: dict, n=30, ref_r=0.3):
    rows = [{"group": "refused-harmful", "n": n, "delta_harmful_mean": 0.1, "delta_harmful_sd": 0.05, "delta_refuse_mean": ref_r,
             "delta_refuse_sd": 0.05, "frac_delta_harmful_pos": 0.95}]
    for name, (h, r, frac_pos) in jb.items():
        rows.append({"group": f"jailbreak: {name}", "n": n, "delta_harmful_mean": h, "delta_harmful_sd": 0.05, "delta_refuse_mean": r,
                     "delta_refuse_sd": 0.05, "frac_delta_harmful_pos": frac_pos})
    return pd.DataFrame(rows)


def table3(cells: dict, lg3=True, n=100):
    rows = []
    for name, (lg, l3) in cells.items():
        row = {"test_set": name, "n": n, "latent_guard": lg, "note": ""}
        if lg3:
            row["llama_guard3"] = l3
        rows.append(row)
    return pd.DataFrame(rows)


def attack(acc0, acc1, dh0=0.2, dh1=0.2, n=100, se=0.01):
    a = pd.DataFrame([{"n_pairs": 0, "accepted": round(acc0 * n), "n_prompts": n, "acceptance_rate": acc0, "middle_layers": "3-8",
                       "delta_harmful_mid": dh0, "delta_refuse_mid": 0.2},
                      {"n_pairs": 50, "accepted": round(acc1 * n), "n_prompts": n, "acceptance_rate": acc1, "middle_layers": "3-8",
                       "delta_harmful_mid": dh1, "delta_refuse_mid": -0.1}])
    lay = pd.DataFrame([{"n_pairs": k, "layer": l, "delta_harmful": v, "delta_harmful_se": se}
                        for k, v in ((0, dh0), (50, dh1)) for l in range(L)])
    return a, lay


def categories(inst=0.6, post=0.8, sd=0.01, B=200, seed=0):
    rng = np.random.default_rng(seed)
    arr = lambda m: m + sd * rng.standard_normal(L)  # noqa: E731
    boot = lambda m: m + sd * rng.standard_normal((B, L))  # noqa: E731
    return {"inst": arr(inst), "post": arr(post), "inst_boot": boot(inst), "post_boot": boot(post), "n_categories": 5}


# ---------------------------------------------------------------- intervals and parts
def test_intervals():
    lo, hi = claims.wilson(0, 10)
    assert lo == 0 and 0.2 < hi < 0.35  # a zero count still has an upper bound
    d, lo, hi = claims.newcombe(10, 10, 10, 10)
    assert d == 0 and lo < 0 < hi  # two 100 % cells of 10: the difference is not known to be 0
    p, lo, hi = claims.bootstrap(np.mean, np.arange(100.0))
    assert lo < p < hi and hi - lo < 25


@pytest.mark.parametrize("op,lo,hi,outcome", [(">", 0.1, 0.2, "pass"), (">", -0.2, -0.1, "fail"), (">", -0.1, 0.1, "undecided"),
                                              ("<=", 0.1, 0.2, "fail"), ("in", 0.1, 0.3, "fail"), ("in", -0.1, 0.3, "pass")])
def test_part_outcomes(op, lo, hi, outcome):
    assert claims.Part("x", (lo + hi) / 2, lo, hi, op, 0.0).outcome == outcome


def test_verdict_order():
    ok, bad, gap, und = (claims.Part("a", 1, 0.5, 1.5), claims.Part("b", -1, -1.5, -0.5), claims.Part("c", missing="not supplied"),
                         claims.Part("d", 0, -1, 1))
    assert claims.verdict([ok]) == (HOLDS, "")
    assert claims.verdict([ok, bad, gap])[0] == FAILS  # a measured failure beats a gap
    assert claims.verdict([ok, gap, und]) == (NOT_MEASURABLE, "c: not supplied")
    v, why = claims.verdict([ok, und])
    assert v == NOT_MEASURABLE and why.startswith("too few prompts to decide: d 95% CI")


# ---------------------------------------------------------------- every claim, every verdict
def test_claim_1():
    assert verdict(1, Evidence("m", table1=table1(98, 81)))[0] == HOLDS
    assert verdict(1, Evidence("m", table1=table1(80, 95)))[0] == FAILS
    assert verdict(1, Evidence("m", table1=table1(100, 90, n=8)))[0] == NOT_MEASURABLE  # 8 prompts cannot tell 100 from 90
    assert "no AdvBench row" in verdict(1, Evidence("m"))[1]


def test_claim_2():
    assert verdict(2, ev_scores())[0] == HOLDS
    assert verdict(2, ev_scores(rh_inst=0.05))[0] == FAILS
    v, why = verdict(2, ev_scores(n_rh=0))
    assert v == NOT_MEASURABLE and "no refused harmless prompt" in why
    assert verdict(2, ev_scores(ah_inst=0.003, sd=0.05, n=10))[0] == NOT_MEASURABLE  # too noisy to decide


def test_claim_3():
    assert verdict(3, ev_scores())[0] == HOLDS
    assert verdict(3, ev_scores(ah_post=0.1))[0] == FAILS
    assert "only 2 refused harmless prompts" in verdict(3, ev_scores(n_rh=2))[1]
    # Llama3 / Qwen2: also from the early layers (same data: holds)
    ev = ev_scores()
    ev.model = "qwen2-7b-instruct"
    row = claims.check(3, ev)
    assert row["verdict"] == HOLDS and "layers 1–3" in row["test"] and "Qwen2" in row["paper"]


def test_claim_4():
    assert verdict(4, ev_scores())[0] == HOLDS
    assert verdict(4, ev_scores(other=0.05))[0] == FAILS  # another position shows the pattern too
    assert verdict(4, ev_scores(n_rh=0))[0] == NOT_MEASURABLE
    assert "no hidden states" in verdict(4, Evidence("m"))[1]


def test_claim_5():
    assert verdict(5, Evidence("m", beliefs=beliefs()))[0] == HOLDS
    assert verdict(5, Evidence("m", beliefs=beliefs(rh_h=0.05)))[0] == FAILS
    assert "no refused harmless prompt" in verdict(5, Evidence("m", beliefs=beliefs(n_rh=0)))[1]
    b = beliefs()
    b["delta_refuse"] = np.nan  # the refusal centroid of an empty group
    assert "Δrefuse is undefined" in verdict(5, Evidence("m", beliefs=b))[1]


def test_claim_6():
    assert verdict(6, Evidence("m", fig4=fig4(5, 60, 95)))[0] == HOLDS
    assert verdict(6, Evidence("m", fig4=fig4(5, 95, 60)))[0] == FAILS  # v_harmful beats v_refuse
    assert verdict(6, Evidence("qwen2-7b-instruct", fig4=fig4(5, 80, 90)))[0] != HOLDS  # not "well below" on Qwen2
    v, why = verdict(6, Evidence("m", fig4=fig4(5, 60, 95, arms=("harmfulness",))))
    assert v == NOT_MEASURABLE and "+refusal arm" in why
    assert "refused unsteered" in verdict(6, Evidence("m", fig4=fig4(100, 100, 100)))[1]


def test_claim_7():
    cos = np.full(L, 0.1)
    boot = 0.1 + 0.01 * np.random.default_rng(0).standard_normal((200, L))
    assert verdict(7, Evidence("m", cosine=cos, cosine_boot=boot))[0] == HOLDS
    assert verdict(7, Evidence("m", cosine=cos + 0.6, cosine_boot=boot + 0.6))[0] == FAILS
    assert verdict(7, Evidence("m", cosine=cos + 0.2, cosine_boot=boot * 3))[0] == NOT_MEASURABLE  # CI spans 0.3
    assert "undefined" in verdict(7, Evidence("m", why={"cosine": "the refusal direction is undefined"}))[1]


@pytest.mark.parametrize("mode,r_a", [("refused", [True] * 15 + [False] * 5), ("refused", [True] * 3 + [False] * 17), ("all", [True] * 15 + [False] * 5)])
def test_claim_7_bootstrap_refits_the_workflow_directions(mode, r_a):
    from harmref import directions, geometry

    g = torch.Generator().manual_seed(0)
    h_a, h_b = torch.randn(20, 4, 3, 16, generator=g) + 1, torch.randn(20, 4, 3, 16, generator=g)
    r_b = [False] * 18 + [True] * 2
    point, reps = claims.bootstrap_direction_cosine(h_a, r_a, h_b, r_b, 1, mode, 5, n_boot=60)
    cents, _ = geometry.fit(h_a, r_a, h_b, r_b, mode, 5)  # the directions rule's own fit (with its fallback)
    d = geometry.directions(cents, 1)
    assert np.allclose(point, directions.cosine_by_layer(d["harmfulness"], d["refusal"]).numpy())
    assert reps.shape == (60, 4) and np.isfinite(reps).mean() > 0.9 and np.nanstd(reps, 0).min() > 0  # NaN: a resample without refusals


def test_claim_8():
    harmless = lambda base, cut, keep, valid=None: Evidence("m", fig5=fig5("harmless_test", base, {  # noqa: E731
        "+harmfulness@context": (cut, base), "+refusal@all": (keep, base)}, valid=valid))
    assert verdict(8, harmless(95, 2, 92))[0] == HOLDS
    assert verdict(8, harmless(95, 2, 80))[0] == NOT_MEASURABLE  # 80 % of 50: CI spans 70 %
    assert verdict(8, harmless(95, 80, 80))[0] == FAILS  # +v_harmful does not cut "No"
    assert "no valid" in verdict(8, harmless(95, 2, 80, valid=0))[1]
    assert verdict(8, Evidence("m"))[0] == NOT_MEASURABLE


def test_claim_9():
    harmful = lambda base, raise_, flat: Evidence("m", fig5=fig5("harmful_test", base, {  # noqa: E731
        "-harmfulness@context": (raise_, base), "-refusal@all": (flat, base)}))
    assert verdict(9, harmful(1, 52, 1))[0] == HOLDS
    assert verdict(9, harmful(1, 52, 60))[0] == FAILS  # −v_refuse also raises "No"
    ev = Evidence("m", fig5=fig5("harmful_test", 1, {"-harmfulness@context": (52, 1)}))
    assert "arm -refusal@all not in the inversion sweep" in verdict(9, ev)[1]


def test_claim_10():
    jb = {"template": (0.1, -0.1, 0.9), "adv_suffix_self": (0.02, -0.05, 0.8), "persuasion": (0.0, -0.15, 0.4)}
    assert verdict(10, Evidence("m", fig6=fig6(jb)))[0] == HOLDS
    bad = {**jb, "template": (-0.1, -0.1, 0.1)}  # template flips Δharmful
    assert verdict(10, Evidence("m", fig6=fig6(bad)))[0] == FAILS
    no_pers = {k: v for k, v in jb.items() if k != "persuasion"}
    v, why = verdict(10, Evidence("m", fig6=fig6(no_pers), why={"persuasion": "skipped: dataset 'jb_persuasion' is not configured"}))
    assert v == NOT_MEASURABLE and "persuasion set not supplied" in why


def test_claim_11():
    cells = {"persuasion": (75, 18), "refused_hl": (92, 50)}
    assert verdict(11, Evidence("m", table3=table3(cells)))[0] == HOLDS
    assert verdict(11, Evidence("m", table3=table3({**cells, "refused_hl": (40, 90)})))[0] == FAILS
    v, why = verdict(11, Evidence("m", table3=table3(cells, lg3=False)))
    assert v == NOT_MEASURABLE and "Llama Guard 3 not run" in why
    # a paper model: Latent Guard far from the paper's Table 3 cell does not hold
    q = {"persuasion": (75, 18), "refused_hl": (92, 50), "template": (95, 91)}  # paper Qwen2 template 53.5
    assert verdict(11, Evidence("qwen2-7b-instruct", table3=table3(q)))[0] == FAILS
    assert verdict(11, Evidence("qwen2-7b-instruct", table3=table3({**q, "template": (53, 91)})))[0] == HOLDS


def test_claim_12():
    a, lay = attack(0.05, 0.6)
    assert verdict(12, Evidence("m", attack=a, attack_layers=lay))[0] == HOLDS
    a, lay = attack(0.05, 0.6, dh1=0.05)  # Δharmful collapses
    assert verdict(12, Evidence("m", attack=a, attack_layers=lay))[0] == FAILS
    v, why = verdict(12, Evidence("m", why={"attack": "m is not a tuned model organism"}))
    assert v == NOT_MEASURABLE and "tuned" in why


def test_claim_13():
    ev = lambda **kw: Evidence("m", categories=categories(**kw), middle=(3, 8))  # noqa: E731
    assert verdict(13, ev())[0] == HOLDS
    assert verdict(13, ev(inst=0.8, post=0.6))[0] == FAILS
    assert verdict(13, ev(inst=0.6, post=0.605, sd=0.2))[0] == NOT_MEASURABLE
    assert "category_set" in verdict(13, Evidence("m"))[1]


def test_category_bootstrap_matches_the_geometry_table():
    from harmref import geometry

    g = torch.Generator().manual_seed(0)
    h = torch.randn(12, 4, 3, 16, generator=g)
    cats = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    mu0 = torch.randn(4, 3, 16, generator=g)
    out = claims.bootstrap_category_cosines(h, cats, mu0, inst=1, n_boot=30)
    assert out["inst"].shape == (4,) and out["inst_boot"].shape == (30, 4) and out["n_categories"] == 3
    table = geometry.category_table(geometry.category_directions(h, cats, mu0, 1), torch.randn(4, 16), torch.randn(4, 16))
    assert np.allclose(out["inst"], table["pairwise_cos_inst"]) and np.allclose(out["post"], table["pairwise_cos_post"])


def test_every_claim_has_a_rule_and_renders():
    ev = ev_scores()
    ev.table1, ev.beliefs = table1(98, 81), beliefs()
    rows = claims.check_all(ev)
    assert list(rows["claim"]) == list(range(1, 14))
    assert set(rows["verdict"]) <= {HOLDS, FAILS, NOT_MEASURABLE}
    md = claims.markdown(rows, "m")
    assert md.count("\n## ") == 13 and "| 1 | Post-inst tokens" in md


def test_paper_numbers_have_sources_and_feed_the_tables():
    from harmref import guards, tables

    assert paper.table1()["llama3-8b-instruct"] == (96.0, 58.9)
    assert tables.PAPER_TABLE1 == paper.table1() and guards.PAPER_TABLE3 == paper.table3()
    assert paper.table3()["qwen2-7b-instruct"]["latent_guard"]["persuasion"] == 75.0
    assert paper.fmt(paper.get("fig4", "llama3-8b-instruct")["harmfulness"], " %") == "94 % (layer 9) [P]"
    with pytest.raises(ValueError, match="source must be one of"):
        paper._check_sources({"x": {"value": 1, "source": "guess"}}, [])


def test_readme_block():
    rows = claims.check_all(Evidence("m", table1=table1(98, 81)))
    section = claims.readme_section({"m": rows})
    assert "1 holds" in section and "with 98.0 %, without 81.0 %" in section
    readme = f"# x\n\n{claims.README_BEGIN}\nnot generated yet\n{claims.README_END}\n\ntail\n"
    filled = claims.fill_readme(readme, section)
    assert "not generated yet" not in filled and filled.endswith("tail\n") and "98.0 %" in filled
    assert claims.fill_readme(filled, section) == filled  # idempotent
    with pytest.raises(ValueError, match="marker"):
        claims.fill_readme("# no markers\n", section)


def test_paper_layout_sections_and_index():
    t = {"table1_post_instruction": table1(97, 60).assign(model="llama3-8b-instruct"),
         "fig4_steering_refusal": fig4(5, 60, 95), "table3_guards": table3({"persuasion": (70, 10), "refused_hl": (80, 50)})}
    s = paper_layout.sections(t, "llama3-8b-instruct")
    assert s["table1"].iloc[0]["without (paper)"] == "58.9 [P]"
    assert (s["table3"]["source"] == "paper [P]").sum() == 2
    md = paper_layout.render({"llama3-8b-instruct": s, "other": paper_layout.sections({}, "other")})
    assert "Table 1" in md and "Not produced for `other`" in md
    idx = paper_layout.results_index(["results/m/tables/fig4_steering_refusal.csv", "results/m/claims.md", "results/data/advbench.jsonl"])
    assert "| [m/tables/fig4_steering_refusal.csv](m/tables/fig4_steering_refusal.csv) | §3.4, Fig 4 |" in idx
    assert "§7 claims" in idx and "§3 datasets" in idx


def test_the_readme_has_one_results_block():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    filled = claims.fill_readme(readme, "x")
    assert filled.count(claims.README_BEGIN) == 1 and len(filled) < len(readme)


def test_readme_command(tmp_path):
    section, readme = tmp_path / "s.md", tmp_path / "README.md"
    section.write_text("- **1. Post-inst tokens**: *holds*.\n")
    readme.write_text(f"a\n{claims.README_BEGIN}\nold\n{claims.README_END}\nb\n")
    assert claims.main(["readme", str(section), str(readme)]) == 0
    assert readme.read_text() == f"a\n{claims.README_BEGIN}\n- **1. Post-inst tokens**: *holds*.\n{claims.README_END}\nb\n"
    with pytest.raises(SystemExit, match="not found"):
        claims.main(["readme", str(tmp_path / "missing.md"), str(readme)])


# ---------------------------------------------------------------- the real tables, through CSV
def through_csv(df, tmp_path, name):
    from harmref import io

    io.write_table(df, tmp_path / name)
    return pd.read_csv(tmp_path / f"{name}.csv")


def steer_rows(experiment, set_name, arms: dict, n=30, layers=range(4)):
    """Synthetic steered generations: arm → (layer → share of prompts refused / answering "No")."""
    rows = []
    for arm, by_layer in arms.items():
        for layer in ([None] if arm == "baseline" else layers):
            share = by_layer(layer)
            for i in range(n):
                hit = i < round(share * n)
                r = {"experiment": experiment, "set": set_name, "arm": arm, "control": "baseline" if arm == "baseline" else "layer_sweep",
                     "layer": layer, "coeff": 0.0 if arm == "baseline" else 1.0, "rescale_to": None, "norm": 1.0, "prompt_id": i}
                if experiment == "refusal":
                    r.update(question_id=None, refused=hit, refusal_score=1.0 if hit else -1.0, response="I cannot" if hit else "Sure")
                else:
                    r.update(question_id="Q1", answer="harmless" if hit else "harmful", inversion_margin=-1.0 if hit else 1.0,
                             response="No" if hit else "Certainly")
                rows.append(r)
    return rows


def test_claims_read_the_steering_report_tables(tmp_path):
    from harmref import steering_tables

    rows = steer_rows("refusal", "harmless_test", {"baseline": lambda l: 0.05, "+harmfulness@all": lambda l: 0.6 if l == 2 else 0.05,
                                                  "+refusal@all": lambda l: 0.97 if l == 2 else 0.05})
    rows += steer_rows("inversion", "harmless_test", {"baseline": lambda l: 0.95, "+harmfulness@context": lambda l: 0.0 if l == 1 else 0.9,
                                                     "+refusal@all": lambda l: 0.97})
    rows += steer_rows("inversion", "harmful_test", {"baseline": lambda l: 0.0, "-harmfulness@context": lambda l: 0.6 if l == 3 else 0.0,
                                                    "-refusal@all": lambda l: 0.0})
    t = steering_tables.report_tables(steering_tables.summarise(rows), "m")
    ev = Evidence("m", fig4=through_csv(t["fig4"], tmp_path, "fig4"), fig5=through_csv(t["fig5"], tmp_path, "fig5"))
    for c in (6, 8, 9):
        row = claims.check(c, ev)
        assert row["verdict"] == HOLDS, (row["test"], row["reason"])
    assert "peak +v_harmful 60 % at layer 2" in claims.check(6, ev)["measured"]


def test_claims_read_the_guard_tables(tmp_path):
    from harmref import guards

    rng = np.random.default_rng(0)
    recs = []
    for s, label, refused, dh, dr, k in (("harmful_test", "harmful", True, 0.1, 0.3, 30), ("harmless_test", "harmless", False, -0.1, -0.3, 30),
                                         ("xstest_safe", "harmless", True, -0.05, 0.1, 20), ("jb_template", "harmful", False, 0.1, -0.1, 20)):
        for i in range(k):
            h, r = dh + 0.02 * rng.standard_normal(), dr + 0.02 * rng.standard_normal()
            recs.append({"set": s, "id": f"{s}:{i}", "label": label, "refused": refused, "delta_harmful": h, "delta_refuse": r,
                         "latent_guard": h >= 0, "refusal_direction": r >= 0, "own_refusal": refused, "llama_guard3": label == "harmful" and i % 2 == 0})
    scores = pd.DataFrame(recs)
    tests = [{"name": "harmful", "set": "harmful_test", "keep": "all"}, {"name": "harmless", "set": "harmless_test", "keep": "all"},
             {"name": "refused_hl", "set": "xstest_safe", "keep": "refused"},
             {"name": "template", "set": "jb_template", "keep": "accepted", "jailbreak": True}]
    skipped = {"persuasion": "skipped: dataset 'jb_persuasion' is not configured"}
    t3 = through_csv(guards.guard_table(scores, tests, "m", skipped), tmp_path, "table3")
    plain = [t["set"] for t in tests if not t.get("jailbreak")]
    f6 = through_csv(guards.group_means(guards.fig6_groups(scores, plain, {"template": "jb_template"}), "m"), tmp_path, "fig6")
    ev = Evidence("m", table3=t3, fig6=f6, why=skipped)
    v11, why11 = verdict(11, ev)
    assert v11 == NOT_MEASURABLE and "persuasion set not supplied" in why11  # refused_hl itself passes
    assert "refused_hl: Latent Guard − Llama Guard 3" in claims.check(11, ev)["test"]
    v10, why10 = verdict(10, ev)
    assert v10 == NOT_MEASURABLE and "persuasion set not supplied" in why10 and "no adv-suffix prompt jailbroke" in why10
    assert "template: mean Δharmful" in claims.check(10, ev)["test"]


def test_claims_read_the_attack_tables(tmp_path):
    from harmref import attack

    g = torch.Generator().manual_seed(0)
    recs = [{"id": str(i)} for i in range(40)]
    summ, lay = [], []
    for n, refused in ((0, [True] * 38 + [False] * 2), (50, [True] * 10 + [False] * 30)):
        s_h = 0.2 + 0.01 * torch.randn(40, L, generator=g)
        s_r = (0.3 if n == 0 else -0.2) + 0.01 * torch.randn(40, L, generator=g)
        a, b = attack.attack_rows(n, recs, refused, s_h, s_r, (3, 8), model="m")
        summ.append(a)
        lay += b
    ev = Evidence("m", attack=through_csv(attack.attack_table(summ), tmp_path, "attack"),
                  attack_layers=through_csv(pd.DataFrame(lay), tmp_path, "layers"))
    row = claims.check(12, ev)
    assert row["verdict"] == HOLDS and "acceptance 5 % → 75 %" in row["measured"], row


def test_index_lists_intermediate_folders():
    idx = paper_layout.results_index(["results/m/claims.md"], {"results/m/hidden/": 4, "results/benchmarks/generate/": 1})
    assert "| [m/hidden/](m/hidden/) (4 files) | §2.2 hidden states |" in idx
    assert "| [benchmarks/generate/](benchmarks/generate/) (1 file) | run accounting |" in idx
