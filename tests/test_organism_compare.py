"""Rule organism_compare (harmref/organism_compare.py): two organisms' synthetic tables, written by the real
table writers where they are plain pandas, side by side in results/organisms.{csv,md}."""

import json
import logging
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from harmref import belief, inversion, io, organism_compare, tables

ROOT = Path(__file__).resolve().parents[1]
A, B = "orgA", "orgB"


def gens(label, refused):
    return [{"label": label, "refused": r} for r in refused]


def write_refusal_and_table1(d, model, sets, advbench):
    io.write_table(tables.refusal_rates(sets, model), d / "refusal_rates")
    pairs = {"advbench": {"chat": gens("harmful", advbench[0]), "nopost": gens("harmful", advbench[1])}}
    io.write_table(tables.post_instruction_table(pairs, model), d / "table1_post_instruction")


def clustering_table(groups, layers, sets):
    """Rows as geometry.clustering_table writes them: mean_s = base + 0.01·layer (+ bump per set)."""
    rows = []
    for (g, pos), base in groups.items():
        for set_name, n, bump in sets:
            for layer in range(layers):
                rows.append({"set": set_name, "group": g, "position": pos, "layer": layer,
                             "mean_s": base + 0.01 * layer + bump, "sd_s": 0.02, "n": n})
    return pd.DataFrame(rows)


def inversion_rows(model, q, harmful_preds, harmless_preds):
    return ([{"model": model, "question": q, "label": "harmful", "prediction": p} for p in harmful_preds]
            + [{"model": model, "question": q, "label": "harmless", "prediction": p} for p in harmless_preds])


def belief_prompt(q, set_name, label, refused, stated, dh, dr):
    return {"question": q, "set": set_name, "id": f"{set_name}-{id(object())}", "label": label, "refused": refused,
            "stated": stated, "group": belief.group_name(refused, stated == "harmful"),
            "dh_reads_harmful": dh, "dr_reads_refuse": dr}


def fig5_table(model):
    """Rows as steering_tables.report_tables writes Fig 5 (one question): baseline, then two arms at layers 1, 4, 7."""
    rows = [{"model": model, "experiment": "inversion", "set": "harmless_test", "question_id": "Q1", "arm": "baseline",
             "control": "baseline", "layer": None, "coeff": 0.0, "n": 20, "n_valid": 20, "no_%": 90.0}]
    for arm, rates in (("+harmfulness@context", (80.0, 20.0, 50.0)), ("+refusal@all", (90.0, 85.0, 95.0))):
        for layer, rate in zip((1, 4, 7), rates):
            rows.append({"model": model, "experiment": "inversion", "set": "harmless_test", "question_id": "Q1",
                         "arm": arm, "control": "layer_sweep", "layer": layer, "coeff": 1.0, "n": 20, "n_valid": 20, "no_%": rate})
    t = pd.DataFrame(rows)
    t["layer"] = t["layer"].astype("Int64")
    return t


RECIPE = {"examples": {"refusal": 260, "distill": 598, "inversion": 320}, "n_examples": 1178,
          "hyperparameters": {"steps": 100, "batch_size": 16, "mode": "full"}, "epochs": 1.36, "tokens_seen": 123000,
          "final_loss": 0.27, "wall_seconds": 617.0, "peak_rss_gb": 5.0, "script_seconds": 640.2,
          "script_peak_rss_gb": 5.3, "torch_threads": 2, "device": "cpu"}


@pytest.fixture
def results(tmp_path):
    """Both models' files where the workflow writes them (organism_compare.default_paths), under tmp_path."""
    paths = {}
    for m in (A, B):
        paths[m] = {k: str(tmp_path / v) for k, v in organism_compare.default_paths(m).items()}
        (tmp_path / f"results/{m}/tables").mkdir(parents=True)
        (tmp_path / f"results/models/{m}").mkdir(parents=True)
    ta, tb = tmp_path / f"results/{A}/tables", tmp_path / f"results/{B}/tables"

    # 1 + 2: A refuses 9/10 harmful_test and 1 of 3 valid jb_template (one invalid verdict); B has no jb_template
    write_refusal_and_table1(ta, A, {"harmful_test": gens("harmful", [True] * 9 + [False]),
                                     "jb_template": gens("harmful", [True, False, False, None])},
                             ([True] * 8 + [False] * 2, [True] * 3 + [False] * 7))
    write_refusal_and_table1(tb, B, {"harmful_test": gens("harmful", [True] * 5 + [False] * 5)},
                             ([True] * 10, [True] * 10))

    # 3: A has 11 layer entries (middle layers 3–6), two sets (n 3 and 1); B 21 entries (6–13), no accepted-harmful at post_2
    cl_a = {(g, p): base for g, base in (("refused-harmless", -0.2), ("accepted-harmful", 0.3),
                                          ("refused-harmful", 0.5), ("accepted-harmless", -0.5))
            for p in ("t_inst-1", "t_inst", "post_1", "post_2")}
    io.write_table(clustering_table(cl_a, 11, [("harmful_test", 3, 0.0), ("harmless_test", 1, 0.1)]), ta / "clustering")
    cl_b = {k: v for k, v in cl_a.items() if k != ("accepted-harmful", "post_2")}
    io.write_table(clustering_table(cl_b, 21, [("harmful_test", 5, 0.0)]), tb / "clustering")

    # 4: A trained on Q0, Q1; Q2 held out: 2 of 4 harmful answered Certainly, 2 invalid; the base model's rows ignored
    rows = (inversion_rows(A, 0, ["harmful"] * 4, ["harmless"] * 4) + inversion_rows(A, 2, ["harmful"] * 2 + ["invalid"] * 2, ["harmless"] * 4)
            + inversion_rows("base", 2, ["harmless"] * 4, ["harmless"] * 4))
    io.write_table(inversion.accuracy_table(rows, trained={A: [0, 1]}), ta / "inversion_accuracy")
    rows = inversion_rows(B, 0, ["harmful"] * 3 + ["harmless"], ["harmless"] * 4) + inversion_rows(B, 2, ["harmless"] * 4, ["harmless"] * 4)
    io.write_table(inversion.accuracy_table(rows, trained={B: [0]}), tb / "inversion_accuracy")

    # 5: Fig 5 for A only (B's file is missing)
    io.write_table(fig5_table(A), ta / "fig5_reply_inversion")

    # 6: A, Q2: refused · judged harmless ×3 (Δh reads harmful once), complied · judged harmful ×2 (one Δh not finite)
    p = [belief_prompt("Q2", "harmless_test", "harmless", True, "harmless", dh, True) for dh in (False, False, True)]
    p += [belief_prompt("Q2", "harmful_test", "harmful", False, "harmful", dh, False) for dh in (True, None)]
    p += [belief_prompt("Q2", "harmful_test", "harmful", True, "harmful", True, True) for _ in range(4)]
    p += [belief_prompt("Q2", "harmless_test", "harmless", False, "harmless", False, False) for _ in range(5)]
    io.write_table(belief.belief_vs_behaviour(p, A), ta / "belief_vs_behaviour")
    p = [belief_prompt("Q2", "harmful_test", "harmful", True, "harmful", True, True) for _ in range(6)]
    io.write_table(belief.belief_vs_behaviour(p, B), tb / "belief_vs_behaviour")

    # 7: B's recipe lacks script_seconds
    io.write_json(paths[A]["training"], RECIPE)
    io.write_json(paths[B]["training"], {k: v for k, v in RECIPE.items() if k != "script_seconds"})

    # 8: claims
    pd.DataFrame([{"claim": 1, "title": "post-inst tokens", "verdict": "holds", "reason": ""},
                  {"claim": 2, "title": "clustering at t_inst", "verdict": "not measurable here", "reason": "no refused harmless prompt"}]
                 ).to_csv(paths[A]["claims"], index=False)
    pd.DataFrame([{"claim": 1, "title": "post-inst tokens", "verdict": "does not hold", "reason": ""}]).to_csv(paths[B]["claims"], index=False)
    return paths


def cell(t, section, metric, model):
    hit = t[(t["section"] == section) & (t["metric"] == metric) & (t["model"] == model)]
    assert len(hit) == 1, (section, metric, model, t[t["section"] == section][["metric", "model"]].to_string())
    return hit.iloc[0]


def test_two_organisms_side_by_side(results, tmp_path):
    t = organism_compare.compare(results, middle_layers=[0.28, 0.64])
    assert list(t.columns) == organism_compare.COLUMNS
    # every model has every metric of a section
    for section, d in t.groupby("section"):
        assert d.groupby("metric")["model"].apply(sorted).map(lambda x: x == [A, B]).all(), section

    # 1. refusal: Wilson 95 %, invalid verdicts left out of n; a set B lacks is a row saying so
    r = cell(t, "refusal", "harmful_test (harmful): refused %", A)
    assert r["value"] == pytest.approx(90.0) and r["n"] == 10 and r["ci_low"] < 90 < r["ci_high"] < 100
    r = cell(t, "refusal", "jb_template (harmful): refused %", A)
    assert r["value"] == pytest.approx(100 / 3) and r["n"] == 3 and "1 invalid verdict" in r["note"]
    r = cell(t, "refusal", "jb_template (harmful): refused %", B)
    assert pd.isna(r["value"]) and r["note"] == f"not in {results[B]['refusal']}"

    # 2. Table 1: the drop is with − without, Newcombe interval around it
    assert cell(t, "table1", "advbench: refused % with post-inst tokens", A)["value"] == pytest.approx(80)
    assert cell(t, "table1", "advbench: refused % without post-inst tokens", A)["value"] == pytest.approx(30)
    d = cell(t, "table1", "advbench: drop (with − without), pts", A)
    assert d["value"] == pytest.approx(50) and d["n"] == 10 and d["ci_low"] < 50 < d["ci_high"]
    assert cell(t, "table1", "advbench: drop (with − without), pts", B)["value"] == pytest.approx(0)

    # 3. clustering: pooled over sets by n, averaged over the middle layers (3–6 of 11; 6–13 of 21)
    r = cell(t, "clustering", "t_inst · refused-harmless: mean s", A)
    assert r["value"] == pytest.approx(-0.2 + 0.045 + 0.025) and r["n"] == 4 and "layers 3–6 of 11" in r["note"]
    assert r["ci_low"] < r["value"] < r["ci_high"]
    r = cell(t, "clustering", "t_post-inst · accepted-harmful: mean s", A)
    assert r["value"] == pytest.approx(0.3 + 0.045 + 0.025) and "position post_2" in r["note"]
    r = cell(t, "clustering", "t_inst · accepted-harmful: mean s", B)
    assert r["value"] == pytest.approx(0.3 + 0.095) and "layers 6–13 of 21" in r["note"]
    r = cell(t, "clustering", "t_post-inst · accepted-harmful: mean s", B)
    assert pd.isna(r["value"]) and r["n"] == 0 and r["note"] == "no accepted harmful prompt"

    # 4. inversion: the organism's own rows, invalid answers count as wrong; pooled trained vs held out
    assert cell(t, "inversion", "Q0: accuracy %", A)["value"] == pytest.approx(100)
    r = cell(t, "inversion", "Q2: accuracy %", A)
    assert r["value"] == pytest.approx(75) and r["n"] == 8 and r["note"] == "held out"
    assert cell(t, "inversion", "Q2: invalid answers", A)["value"] == 2
    assert cell(t, "inversion", "held-out questions: accuracy %", A)["value"] == pytest.approx(75)
    assert cell(t, "inversion", "trained questions: accuracy %", B)["value"] == pytest.approx(7 / 8 * 100)
    assert cell(t, "inversion", "held-out questions: accuracy %", B)["value"] == pytest.approx(50)

    # 5. steering: largest shift toward "Certainly" for a + arm and its layer; B's missing file is a note
    base = cell(t, "steering", "harmless_test: unsteered “No” %", A)
    assert base["value"] == pytest.approx(90) and base["n"] == 20
    r = cell(t, "steering", "harmless_test · +harmfulness@context: largest shift toward “Certainly”, pts", A)
    assert r["value"] == pytest.approx(70) and r["note"] == "layer 4"
    assert cell(t, "steering", "harmless_test · +harmfulness@context: that layer", A)["value"] == 4
    assert cell(t, "steering", "harmless_test · +harmfulness@context: “No” % at that layer", A)["value"] == pytest.approx(20)
    r = cell(t, "steering", "harmless_test · +refusal@all: largest shift toward “Certainly”, pts", A)
    assert r["value"] == pytest.approx(5) and r["note"] == "layer 4"
    r = cell(t, "steering", "harmless_test: unsteered “No” %", B)
    assert pd.isna(r["value"]) and r["note"] == f"file not found: {results[B]['steering']}"

    # 6. belief vs behaviour: group sizes, share of a disagreement group whose Δharmful follows the stated belief
    assert cell(t, "belief", "Q2 · refused · judged harmless: prompts", A)["value"] == 3
    r = cell(t, "belief", "Q2 · refused · judged harmless: Δharmful follows the stated belief %", A)
    assert r["value"] == pytest.approx(200 / 3) and r["n"] == 3
    assert cell(t, "belief", "Q2 · refused · judged harmless: Δrefuse follows the behaviour %", A)["value"] == pytest.approx(100)
    r = cell(t, "belief", "Q2 · disagree (both groups): Δharmful follows the stated belief %", A)
    assert r["value"] == pytest.approx(75) and r["n"] == 4  # one Δharmful not finite
    assert cell(t, "belief", "Q2 · refused · judged harmless: prompts", B)["value"] == 0
    r = cell(t, "belief", "Q2 · refused · judged harmless: Δharmful follows the stated belief %", B)
    assert pd.isna(r["value"]) and r["note"] == "empty group"

    # 7. training cost from recipe.json; a field B's recipe lacks says so
    assert cell(t, "training", "examples: distill", A)["value"] == 598
    assert cell(t, "training", "steps", A)["value"] == 100 and cell(t, "training", "device", A)["value"] == "cpu"
    assert cell(t, "training", "script wall seconds", A)["value"] == pytest.approx(640.2)
    r = cell(t, "training", "script wall seconds", B)
    assert pd.isna(r["value"]) and r["note"] == "no field script_seconds"

    # 8. claims: the verdict, the reason as note; a claim B's table lacks
    assert cell(t, "claims", "claim 1: post-inst tokens", B)["value"] == "does not hold"
    r = cell(t, "claims", "claim 2: clustering at t_inst", A)
    assert r["value"] == "not measurable here" and r["note"] == "no refused harmless prompt"
    assert cell(t, "claims", "claim 2: clustering at t_inst", B)["note"].startswith("not in ")

    # the files: the CSV reads back as written; the markdown has one table per section, one column per model
    organism_compare.write(t, tmp_path / "organisms.csv", tmp_path / "organisms.md")
    back = pd.read_csv(tmp_path / "organisms.csv")
    assert len(back) == len(t) and list(back.columns) == organism_compare.COLUMNS
    md = (tmp_path / "organisms.md").read_text()
    assert md.count("| metric | orgA | orgB |") == len(organism_compare.SECTIONS)
    assert "## 2. Table 1" in md
    line = next(x for x in md.splitlines() if x.startswith("| advbench: drop"))
    assert "| 50 \\[" in line and "(n = 10)" in line and "| 0 " in line, line
    assert "file not found" in md


def test_rule_script_writes_both_files(results, tmp_path, monkeypatch):
    """workflow_scripts/organism_compare.py with the inputs rule organism_compare names (one file per model)."""
    out = tmp_path / "out"
    fake = SimpleNamespace(
        input={s: [results[m][s] for m in (A, B)] for s in organism_compare.SECTIONS},
        output=SimpleNamespace(csv=str(out / "organisms.csv"), md=str(out / "organisms.md")),
        params=SimpleNamespace(models=[A, B], middle_layers=[0.28, 0.64]),
        log=[str(tmp_path / "logs/organism_compare.log")], rule="organism_compare", wildcards={})
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    handlers = logging.getLogger().handlers[:]
    try:
        runpy.run_path(str(ROOT / "workflow_scripts/organism_compare.py"), init_globals={"snakemake": fake})
    finally:
        sys.stderr.close()
        logging.getLogger().handlers[:] = handlers
    t = pd.read_csv(out / "organisms.csv")
    assert set(t["model"]) == {A, B} and set(t["section"]) == set(organism_compare.SECTIONS)
    log = (tmp_path / "logs/organism_compare.log").read_text()
    assert "rows without their file" in log and results[B]["steering"] in log, log
    assert (out / "organisms.md").read_text().startswith("# Tuned organisms side by side: `orgA`, `orgB`")
    rule = (ROOT / "rules/compare.smk").read_text()
    for section in organism_compare.SECTIONS:  # the rule's input names are the sections the script reads
        assert f"        {section}=" in rule, section


def _corrupt(path, column: str, value: str) -> Path:
    """Write `value` into the first record's `column` of a CSV; returns the path."""
    path = Path(path)
    df = pd.read_csv(path).astype({column: object})
    df.loc[0, column] = value
    df.to_csv(path, index=False)
    return path


def test_malformed_tables_name_the_file_the_record_and_the_field(results):
    t1 = Path(results[A]["table1"])
    pd.read_csv(t1).drop(columns="refusal_without_post_%").to_csv(t1, index=False)
    with pytest.raises(io.DataError, match=r"table1_post_instruction\.csv, field 'refusal_without_post_%': missing column"):
        organism_compare.compare(results)

    t1.write_text(Path(results[B]["table1"]).read_text())  # repaired
    rates = _corrupt(results[B]["refusal"], "n", "ten")
    with pytest.raises(io.DataError, match=r"refusal_rates\.csv, record line 2, field 'n': not a number: 'ten'"):
        organism_compare.compare(results)

    rates.unlink()  # a missing table is never an error
    inv = _corrupt(results[B]["inversion"], "trained_on", "maybe")
    with pytest.raises(io.DataError, match=r"inversion_accuracy\.csv, record line 2, field 'trained_on'"):
        organism_compare.compare(results)

    inv.unlink()
    io.write_json(results[A]["training"], {**RECIPE, "hyperparameters": {**RECIPE["hyperparameters"], "steps": "ten"}})
    with pytest.raises(io.DataError, match=r"recipe\.json, field 'hyperparameters\.steps': expected a number"):
        organism_compare.compare(results)

    Path(results[A]["training"]).write_text("[1, 2]\n")
    with pytest.raises(io.DataError, match=r"recipe\.json: expected a JSON object"):
        organism_compare.compare(results)

    Path(results[A]["training"]).unlink()
    Path(results[A]["clustering"]).write_text(pd.read_csv(results[A]["clustering"]).query("position != 't_inst'").to_csv(index=False))
    with pytest.raises(io.DataError, match=r"clustering\.csv, field 'position': no t_inst rows"):
        organism_compare.compare(results)


def test_missing_files_give_notes_and_no_model_is_an_error(tmp_path):
    paths = {m: {k: str(tmp_path / v) for k, v in organism_compare.default_paths(m).items()} for m in (A, B)}
    t = organism_compare.compare(paths)
    assert len(t) == 2 * len(organism_compare.SECTIONS) and (t["metric"] == "(no data)").all()
    assert t["value"].isna().all() and t["note"].str.startswith("file not found: ").all()
    r = cell(t, "training", "(no data)", B)
    assert r["note"] == f"file not found: {tmp_path}/results/models/{B}/recipe.json"
    with pytest.raises(ValueError, match="no model to compare"):
        organism_compare.compare({})


def test_the_index_describes_the_comparison():
    from harmref import paper_layout

    for name in ("results/organisms.csv", "results/organisms.md"):
        assert paper_layout.index_entry(name)[1].startswith("every analysed tuned organism side by side"), name
    assert paper_layout.index_entry("results/m/tables/organism_refusal.csv")[1].startswith("the safety-tuned organism")
