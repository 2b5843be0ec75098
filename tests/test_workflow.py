"""The whole DAG on the `.test` config (a tiny random Llama, a few prompts per set), as a user runs it."""

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]


def run(workdir, *args, check=True):
    p = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def job_counts(dry_run_output: str) -> dict[str, int]:
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
            elif counts:
                break
    return counts


# every test here but one reads the .test DAG built once by `workdir` (about 2 minutes on 2 cores): the whole workflow
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    config = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    config["data_root"] = str(ROOT / "data")
    (wd / "config").mkdir()
    (wd / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run(wd)
    return wd


def test_dag_produces_backbone_outputs(workdir):
    model = "tiny"
    for sub in ("generations/chat", "hidden", "directions", "tables", "figures"):
        assert any((workdir / "results" / model / sub).iterdir()), sub
    tables = workdir / "results" / model / "tables"
    for name in ("refusal_rates", "table1_post_instruction", "cosine_by_layer", "clustering", "beliefs", "harmfulness_accuracy"):
        assert (tables / f"{name}.csv").stat().st_size > 0 and (tables / f"{name}.md").exists(), name
    assert (workdir / "results" / model / "figures" / "fig2_clustering.png").stat().st_size > 10_000
    leftovers = [p for p in (workdir / "results").rglob("*.tmp")]
    assert not leftovers, leftovers


def test_gcg_attack_on_the_model_itself_reaches_table3(workdir):
    model = "tiny"
    prompts = [yaml.safe_load(line) for line in (workdir / f"results/data/jb_gcg.{model}.jsonl").read_text().splitlines()]
    assert len(prompts) == 2 and all(p["verbatim"] and p["prompt"].endswith(p["suffix"]) for p in prompts)
    assert all(p["target"].startswith("Sure, here is") for p in prompts)  # AdvBench's own targets
    report = pd.read_csv(workdir / f"results/{model}/tables/gcg_attack.csv")
    assert len(report) == 2 and (report["steps"] == 2).all() and report["starts_with_target"].dtype == bool
    assert {"refused_plain", "refused_init", "refused_gcg", "reply_gcg", "prompt_loss", "exact"} <= set(report.columns)
    assert (report["best_loss"] <= report["initial_loss"]).all()
    gens = {r["id"]: r for r in map(yaml.safe_load, (workdir / f"results/{model}/generations/chat/jb_gcg.{model}.jsonl").read_text().splitlines())}
    assert report["refused_gcg"].tolist() == [gens[f"gcg:{g}"]["refused"] for g in report["goal_id"]]  # the generate rule's verdicts
    assert (workdir / f"results/{model}/hidden/jb_gcg.{model}.safetensors").exists()
    table3 = pd.read_csv(workdir / f"results/{model}/tables/table3_guards.csv").set_index("test_set")
    print(table3.to_string())
    assert table3.loc["adv_suffix_self", "dataset"] == f"jb_gcg.{model}" and table3.loc["adv_suffix_self", "attempts"] == 2, table3
    assert "skipped" in str(table3.loc["persuasion"].tolist())
    minilm = (workdir / "results/text_guards/minilm.jsonl").read_text()
    assert f'"set": "jb_gcg.{model}"' in minilm
    leftovers = [p for p in (workdir / "results").rglob("*.tmp")]
    assert not leftovers, leftovers


def check_stated_belief(workdir, model="tiny"):
    """The stated_belief rule's outputs, checked against the generate and geometry rules' own tables."""
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    tables = workdir / "results" / model / "tables"
    per_prompt = pd.read_csv(tables / "stated_belief.csv")
    beliefs = pd.read_csv(tables / "beliefs.csv")
    questions = config.get("belief", {}).get("questions") or config["steering"]["inversion"]["questions"]
    assert len(per_prompt) == len(beliefs) * len(questions) and set(per_prompt["set"]) == set(config["directions"]["eval_sets"])
    merged = per_prompt.merge(beliefs, on=["set", "id"], suffixes=("", "_geometry"))
    assert len(merged) == len(per_prompt)
    assert (merged["refused"] == merged["refused_geometry"]).all() and (merged["label"] == merged["label_geometry"]).all()
    dh = merged[["delta_harmful", "delta_harmful_geometry"]].dropna()  # guard.layers: null → the same Δharmful as beliefs.csv
    assert len(dh) and (dh["delta_harmful"] - dh["delta_harmful_geometry"]).abs().max() < 1e-4
    assert ((per_prompt["margin"] > 0) == (per_prompt["stated"] == "harmful")).all()
    assert per_prompt["reply_verdict"].isin(["harmful", "harmless", "invalid"]).all()
    table = pd.read_csv(tables / "belief_vs_behaviour.csv")
    groups = ["refused · judged harmful", "complied · judged harmless", "refused · judged harmless", "complied · judged harmful"]
    for q in {f"Q{k}" for k in questions}:
        t = table[(table["question"] == q) & (table["verdict"] == "margin") & (table["set"] == "all")].set_index("group")
        assert t.loc[groups, "n"].sum() == len(beliefs), t
        for g in groups:  # agreement counts never exceed the prompts scored
            assert t.loc[g, "dh_belief_k"] <= t.loc[g, "dh_n_scored"] <= t.loc[g, "n"]
    assert (tables / "belief_vs_behaviour.md").read_text().startswith("| question")
    assert (workdir / "results" / model / "figures/belief_vs_behaviour.png").stat().st_size > 10_000


def test_stated_belief_in_the_dag(workdir):
    check_stated_belief(workdir)


def check_latent_guard_on_text(workdir, model="tiny"):
    """The DAG's guard artefact, loaded with the Python API and fed the raw prompt files, gives the DAG's
    Δharmful for every prompt and its Table 3 Latent Guard column; `guard check` gives the API's rows."""
    import numpy as np

    from harmref import cli, guards, io, latent_guard, models

    gdir = workdir / f"results/{model}/guard"
    guard = latent_guard.LatentGuard.load(gdir)
    meta = guard.artefact_
    assert meta["model"]["identity"] == models.card_identity(workdir / f"results/models/{model}/model.json")
    assert meta["created_by"] == "rule latent_guard" and meta["threshold"] == 0.0
    for role in ("harmful", "harmless"):
        t = meta["training"][role]
        assert t["sha256"] == io.sha256_file(workdir / t["file"]) and t["n_records"] == len(io.read_jsonl(workdir / t["file"]))
    dag = pd.DataFrame(io.read_jsonl(gdir / "scores.jsonl"))
    ours = []
    for s in dag["set"].unique():
        recs = io.read_jsonl(workdir / f"results/data/{s}.jsonl")  # raw text; the guard applies the model's ending rule
        rows = guard.score([r["prompt"] for r in recs], verbatim=[bool(r.get("verbatim")) for r in recs])
        ours += [{"set": s, "id": r["id"], "api": row["delta_harmful"], "api_unsafe": row["unsafe"]} for r, row in zip(recs, rows)]
    merged = dag.merge(pd.DataFrame(ours), on=["set", "id"], how="left")
    assert merged["api"].notna().all() and len(merged) == len(dag)
    np.testing.assert_allclose(merged["api"], merged["delta_harmful"], rtol=0, atol=1e-6)
    table3 = pd.read_csv(workdir / f"results/{model}/tables/table3_guards.csv")
    compared = 0
    for t in table3[table3["n"] > 0].to_dict("records"):
        rows = guards.test_rows(merged, {"set": t["dataset"], "keep": t["keep"]})
        acc = 100.0 * float((rows["api_unsafe"].astype(bool) == (rows["label"] == "harmful")).mean())
        assert acc == pytest.approx(t["latent_guard"], abs=1e-9), t
        compared += 1
    assert compared >= 3  # the tiny model refuses everything: the behaviour-selected rows are empty
    # and every set's accuracy in the rule's own metrics (jailbreak and verbatim sets included)
    by_set = io.read_json(gdir / "latent_guard.json")["by_set"]
    for s, rows in merged.groupby("set"):
        assert by_set[s]["accuracy"] == pytest.approx(float((rows["api_unsafe"] == (rows["label"] == "harmful")).mean()), abs=1e-12), s
    # the command line on one raw set gives the API's rows
    s = dag["set"].iloc[0]
    out = workdir / "guard_check.jsonl"
    rc = cli.main(["guard", "check", "--guard", str(gdir), "--input", str(workdir / f"results/data/{s}.jsonl"),
                   "--output", str(out), "--quiet"])
    cli_rows = io.read_jsonl(out)
    want = merged[merged["set"] == s].set_index("id")
    assert rc == (1 if any(r["unsafe"] for r in cli_rows) else 0)
    assert {r["id"]: r["delta_harmful"] for r in cli_rows} == pytest.approx(want["api"].to_dict(), abs=0)
    assert {r["guard_version"] for r in cli_rows} == {meta["version"]}


def test_latent_guard_artefact_scores_raw_text_as_the_dag(workdir):
    check_latent_guard_on_text(workdir)


def test_second_run_does_nothing(workdir):
    out = run(workdir, "-n").stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_changing_one_sample_size_reruns_only_its_dependents(workdir):
    # a whole config file: `--config` passes nested numbers as strings, which the schema rejects
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["datasets"]["harmless_test"]["n"] = 7
    (workdir / "config/n7.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = run(workdir, "-n", "--configfile", str(workdir / "config/n7.yaml")).stdout
    counts = job_counts(out)
    assert counts.get("build_dataset") == 1, counts
    assert counts.get("generate") == 1 and counts.get("extract_hidden") == 1, counts
    assert "prepare_model" not in counts and "directions" not in counts, counts


def jobs_of(dry_run_output: str, rule: str) -> list[dict[str, str]]:
    """The wildcards of every `rule` job a dry run lists."""
    found = re.finditer(rf"^(?:local)?rule {rule}:\n(?:\s+.*\n)*?\s+wildcards: (.*)$", dry_run_output, re.M)
    return [dict(kv.split("=", 1) for kv in m.group(1).split(", ")) for m in found]


def test_a_new_judge_reruns_judging_not_generation(workdir):
    """Judging is its own rule: switching generation.judge reruns `judge` on every set of the model's replies
    and what reads the verdicts, never the model's `generate`; a setting of a judge not in use, or of another
    rule, reruns nothing (params carry only the keys each rule reads)."""
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    n_sets = len(list((workdir / "results/tiny/replies").glob("*/*.jsonl")))
    assert n_sets == len(list((workdir / "results/tiny/generations").glob("*/*.jsonl"))) > 5

    def dry(**changes):
        cfg = copy.deepcopy(config)  # key order kept: Snakemake compares dict params as written
        for block, keys in changes.items():
            cfg[block].update(keys)
        path = workdir / "config/changed.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return run(workdir, "-n", "--configfile", str(path)).stdout

    ollama = {"host": "http://127.0.0.1:9", "model": "judge:1b", "timeout": 5}  # a dry run contacts no server
    out = dry(generation={"judge": "ollama", "ollama_judge": ollama})
    counts = job_counts(out)
    assert len([j for j in jobs_of(out, "judge") if j["model"] == "tiny"]) == n_sets, counts
    # the model's own replies and hidden states stay; only its attacked models (trained on pairs chosen with
    # the new verdicts' directions) are generated again
    assert not [j for j in jobs_of(out, "generate") + jobs_of(out, "extract_hidden") if j["model"] == "tiny"], counts
    assert "prepare_model" not in counts and "build_dataset" not in counts, counts
    assert {"refusal_tables", "directions", "geometry", "latent_guard", "steer", "claims"} <= set(counts), counts
    assert "Nothing to be done" in dry(generation={"ollama_judge": ollama})  # substring judge in use: no rerun
    assert "Nothing to be done" in dry(runtime={"threads": 1})  # `threads:`, not a param of any rule
    counts = job_counts(dry(steering={**config["steering"], "controls": {**config["steering"]["controls"], "coefficients": [3]}}))
    assert counts.get("steer_controls") == 1 and "steer" not in counts and "generate" not in counts, counts


def test_every_rule_is_described_and_every_paper_target_builds(tmp_path):
    """`snakemake --list-rules` shows a docstring for every rule; each named paper target (table1, fig2, …)
    resolves on the .test config and asks only for what it needs."""
    config = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    config["data_root"] = str(ROOT / "data")
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    listed = run(tmp_path, "--list-rules").stdout
    names = re.findall(r"^(\w+)", listed, flags=re.M)
    described = set(re.findall(r"^(\w+) \(", listed, flags=re.M))
    assert {"generate", "judge", "all", "table1", "table3"} <= set(names)
    assert set(names) == described, sorted(set(names) - described)
    targets = ["table1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig14", "table3"]
    out = run(tmp_path, "-n", *targets).stdout
    counts = job_counts(out)
    assert all(counts.get(t) == 1 for t in targets), counts
    assert {"refusal_tables", "geometry", "steering_report", "fig6_jailbreaks", "table3_guards"} <= set(counts), counts
    assert "claims" not in counts and "report_pages" not in counts, counts
    counts = job_counts(run(tmp_path, "-n", "table1").stdout)
    assert set(counts) == {"build_dataset", "prepare_model", "prompt_view", "generate", "judge", "refusal_tables", "table1",
                           "total"}, counts


def check_finetune_attack(workdir, model="tiny", n=2):
    """Fig 7 from the derived model {model}-attack{n} (rule attack_train), whose replies and hidden states come
    from the ordinary generate / judge / extract_hidden rules; Δ with the unattacked model's centroids."""
    import numpy as np

    from harmref import io, models
    from harmref.directions import centroid_score

    res = workdir / "results"
    attacked = f"{model}-attack{n}"
    card = io.read_json(res / f"models/{attacked}/model.json")
    assert card["kind"] == "attacked" and card["attack_from"] == model and card["n_pairs"] == n
    assert card["weights_sha256"] and card["identity"] == models.card_identity(card)
    assert card["base_identity"] == models.card_identity(res / f"models/{model}/model.json") != card["identity"]
    recipe = io.read_json(res / f"models/{attacked}/recipe.json")
    pairs = io.read_jsonl(res / f"{model}/finetune_attack/pairs.jsonl")
    assert recipe["data_sha256"]["pairs"] == io.sha256_file(res / f"{model}/finetune_attack/pairs.jsonl")
    table = pd.read_csv(res / f"{model}/tables/finetune_attack.csv")
    assert table["n_pairs"].tolist() == [0, min(n, len(pairs))] and table["attack"].iloc[0] == "none"
    assert table["train_steps"].tolist() == [0, len(recipe["losses"])] and len(recipe["losses"]) >= 1
    eval_n = 4  # .test: organism.attack.eval_n, eval_sets [harmful_test]
    for row, name in zip(table.to_dict("records"), (model, attacked)):
        gens = io.read_jsonl(res / f"{name}/generations/chat/harmful_test.jsonl")[:eval_n]
        assert row["n_prompts"] == eval_n and row["accepted"] == sum(not g["refused"] for g in gens), name
    # Δharmful / Δrefuse per layer: the attacked model's stored hidden states, the unattacked centroids
    h = io.read_tensors(res / f"{attacked}/hidden/harmful_test.safetensors")["hidden"][:eval_n].float()
    cents = io.read_tensors(res / f"{model}/directions/directions.safetensors")
    inst = io.read_sidecar(res / f"{model}/directions/directions.safetensors")["inst_index"]
    layers = pd.read_csv(res / f"{model}/tables/finetune_attack_layers.csv")
    got = layers[layers["n_pairs"] == table["n_pairs"].iloc[1]].sort_values("layer")
    want_h = centroid_score(h[:, :, inst], cents["mu_harmful"][:, inst], cents["mu_harmless"][:, inst]).mean(0)
    want_r = centroid_score(h[:, :, -1], cents["mu_refused"][:, -1], cents["mu_accepted"][:, -1]).mean(0)
    np.testing.assert_allclose(got["delta_harmful"], want_h.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["delta_refuse"], want_r.numpy(), rtol=0, atol=1e-6, equal_nan=True)
    assert (res / f"{model}/figures/fig7_finetune_attack.png").stat().st_size > 10_000


def test_finetune_attack_reads_the_attacked_models_outputs(workdir):
    check_finetune_attack(workdir)


def test_claims_paper_tables_and_index(workdir):
    """The regenerated paper (rules/report.smk): 13 computed claims, the paper's layout, an index of every output."""
    from harmref.claims import FAILS, HOLDS, NOT_MEASURABLE

    res = workdir / "results"
    claims = pd.read_csv(res / "tiny/claims.csv").set_index("claim")
    assert list(claims.index) == list(range(1, 14)) and set(claims["verdict"]) <= {HOLDS, FAILS, NOT_MEASURABLE}
    assert "persuasion set not supplied" in claims.loc[11, "reason"]  # jb_persuasion is not configured in .test
    # claim 12 says why when it cannot decide (Fig 7 not run, or too few prompts: .test attacks tiny with N = 2 on 4)
    assert claims.loc[12, "verdict"] != NOT_MEASURABLE or any(w in claims.loc[12, "reason"] for w in ("attack", "too few prompts"))
    assert all(isinstance(r, str) and r for r in claims.loc[claims["verdict"] != HOLDS, "reason"])  # every verdict but holds says why
    assert claims.loc[1, "measured"].startswith("with ") and "(n = 8)" in claims.loc[1, "measured"]
    md = (res / "tiny/claims.md").read_text()
    assert md.count("\n## ") == 13
    for path in (res / "tiny/paper_tables.md", res / "paper_tables.md"):
        text = path.read_text()
        assert "## Table 1" in text and "## Table 3" in text and "## Fig 6" in text, path
    index = (res / "index.md").read_text()
    listed = re.findall(r"^\| \[([^\]]+)\]", index, flags=re.M)
    assert "tiny/claims.md" in listed and "tiny/tables/table3_guards.csv" in listed and "tiny/figures/fig2_clustering.png" in listed
    assert "index.md" not in listed and all((res / p).exists() for p in listed)
    assert "| [tiny/tables/fig4_steering_refusal.csv](tiny/tables/fig4_steering_refusal.csv) | §3.4, Fig 4 |" in index
    assert (res / "readme_results.md").read_text().startswith("Claims of the paper (§7) on `tiny`")


def test_html_report_renders_in_a_browser(workdir):
    """`snakemake --report` of this run: every figure and table in its section, opened in headless Chromium
    (tests/test_report.py: check_report; screenshots in .ci/artefacts/)."""
    from test_report import check_report

    check_report(workdir, run)


def test_bad_data_file_fails_clearly_and_leaves_nothing(workdir, tmp_path):
    wd = tmp_path / "bad"
    shutil.copytree(workdir / "config", wd / "config")
    (wd / "raw").mkdir()
    (wd / "raw/broken.jsonl").write_text('{"instruction": "fine"}\n{"instruction": ""}\n')
    config = yaml.safe_load((wd / "config/config.yaml").read_text())
    config["data_root"] = str(wd)
    config["datasets"]["broken"] = {"label": "harmful", "sources": [{"file": "raw/broken.jsonl"}]}
    (wd / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    p = run(wd, "results/data/broken.jsonl", check=False)
    assert p.returncode != 0
    log = (wd / "logs/build_dataset/broken.log").read_text()
    assert "broken.jsonl, record 2, field 'instruction': empty prompt" in log, log[-1500:]
    assert not (wd / "results/data/broken.jsonl").exists()
