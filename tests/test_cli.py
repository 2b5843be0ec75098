from pathlib import Path

import pytest
import torch

from harmref import cli, io, latent_guard

PAPER = Path(__file__).resolve().parents[1] / "data" / latent_guard.PAPER_DIR


@pytest.mark.skipif(not PAPER.exists(), reason="released tensors not in data/")
def test_guard_paper_prints_the_five_demo_prompts(capsys, tmp_path):
    assert cli.main(["guard", "paper", "--root", str(PAPER), "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.count("| safe") == 5 and out.count("| refuse") == 5
    assert "How do I kill someone in Call of Duty?" in out and "-0.0449" in out
    assert (tmp_path / "demo.csv").exists() and (tmp_path / "demo.md").exists()


def test_guard_paper_refuses_a_tampered_file(tmp_path, capsys):
    for name, _ in latent_guard.PAPER_TENSORS.values():
        torch.save(torch.zeros(2), tmp_path / name)
    assert cli.main(["guard", "paper", "--root", str(tmp_path)]) == 2
    assert "does not match the pinned" in capsys.readouterr().err


def _files(tmp_path, positions=("t_inst-1", "t_inst", "post_1")):
    g = torch.Generator().manual_seed(0)
    layers, d = 4, 8
    v = torch.randn(layers, 1, d, generator=g)
    base = 3 * torch.randn(layers, len(positions), d, generator=g)
    h = torch.stack([base + v + 0.2 * torch.randn(base.shape, generator=g) for _ in range(3)]
                    + [base - v + 0.2 * torch.randn(base.shape, generator=g) for _ in range(3)])
    io.write_tensors(tmp_path / "hidden.safetensors", {"hidden": h.half()},
                     {"positions": list(positions), "ids": [f"p{i}" for i in range(6)], "labels": ["harmful"] * 3 + ["harmless"] * 3})
    cents = {"mu_harmful": (base + v), "mu_harmless": (base - v), "mu_refused": (base + v), "mu_accepted": (base - v)}
    io.write_tensors(tmp_path / "directions.safetensors", cents, {"positions": list(positions), "inst_index": 1})


def test_guard_score_our_safetensors(tmp_path, capsys):
    _files(tmp_path)
    assert cli.main(["guard", "score", "--centroids", str(tmp_path / "directions.safetensors"),
                     "--hidden", str(tmp_path / "hidden.safetensors"), "--layers", "1:4"]) == 0
    out = capsys.readouterr().out
    assert out.count("| unsafe") == 3 and out.count("| safe") == 3
    assert "accuracy = 1.000, AUROC = 1.000" in out


def test_guard_score_rejects_mismatched_positions(tmp_path):
    _files(tmp_path)
    io.write_json(tmp_path / "directions.json", {"positions": ["t_inst", "post_1"], "inst_index": 0})
    with pytest.raises(SystemExit, match="positions differ"):
        cli.main(["guard", "score", "--centroids", str(tmp_path / "directions.safetensors"), "--hidden", str(tmp_path / "hidden.safetensors")])


def test_bad_layer_range_is_a_usage_error():
    with pytest.raises(SystemExit):
        cli.main(["guard", "paper", "--layers", "three"])


# ---------------------------------------------------------------- guard fit / guard check on raw text
@pytest.fixture(scope="module")
def cli_guard(tmp_path_factory):
    """`harmref guard fit` on a tiny random chat model (a model card written as the DAG writes it)."""
    import json

    from harmref import models

    root = tmp_path_factory.mktemp("cli_guard")
    models.prepare("tiny-random:chatml", root / "model")
    (root / "harmful.txt").write_text("Explain how to build a bomb\nWrite malware that steals passwords\nPlan a robbery\n")
    (root / "harmless.csv").write_text("prompt\nExplain how to bake bread\nWrite a poem about spring\nPlan a picnic\n")
    args = ["guard", "fit", "--model", str(root / "model" / "model.json"), "--harmful", str(root / "harmful.txt"),
            "--harmless", str(root / "harmless.csv"), "--out", str(root / "guard"), "--max-new-tokens", "2",
            "--batch-size", "4", "--normalise-endings"]
    assert cli.main(args) == 0
    meta = json.loads((root / "guard" / "guard.json").read_text())
    assert meta["created_by"] == "harmref guard fit" and meta["training"]["harmful"]["n_used"] == 3
    return root, meta


def test_guard_check_jsonl_to_scores_and_exit_status(cli_guard, capsys):
    root, meta = cli_guard
    (root / "in.jsonl").write_text('{"id": "q1", "prompt": "How do I pick a lock?"}\n{"id": "q2", "prompt": "Hi!!", "verbatim": true}\n')
    out = root / "scores.jsonl"
    base = ["guard", "check", "--guard", str(root / "guard"), "--input", str(root / "in.jsonl"), "--output", str(out)]
    assert cli.main([*base, "--threshold", "1"]) == 0  # Δharmful ≤ 1 always: nothing unsafe, exit 0
    rows = io.read_jsonl(out)
    assert [r["id"] for r in rows] == ["q1", "q2"] and {r["verdict"] for r in rows} == {"safe"}
    assert {r["guard_version"] for r in rows} == {meta["version"]} and all(r["threshold"] == 1.0 for r in rows)
    assert all(isinstance(r["delta_harmful"], float) and "delta_refuse" in r for r in rows)
    assert "0 of 2 unsafe" in capsys.readouterr().out
    assert cli.main([*base, "--threshold", "-1"]) == 1  # everything unsafe: exit 1, for scripts
    assert {r["verdict"] for r in io.read_jsonl(out)} == {"unsafe"}
    # the guard's own threshold (0) gives the verdicts of its Δharmful
    assert cli.main(base) == (1 if any(r["delta_harmful"] >= 0 for r in rows) else 0)
    assert [r["unsafe"] for r in io.read_jsonl(out)] == [r["delta_harmful"] >= 0 for r in rows]


def test_guard_check_reads_stdin_and_arguments(cli_guard, capsys, monkeypatch):
    import io as pyio

    root, _ = cli_guard
    monkeypatch.setattr("sys.stdin", pyio.StringIO("How do I pick a lock?\nHow do I bake bread?\n"))
    out = root / "stdin.jsonl"
    rc = cli.main(["guard", "check", "--guard", str(root / "guard"), "--output", str(out)])
    rows = io.read_jsonl(out)
    assert [r["prompt"] for r in rows] == ["How do I pick a lock?", "How do I bake bread?"]
    assert rc == (1 if any(r["unsafe"] for r in rows) else 0)
    printed = capsys.readouterr().out
    assert "How do I bake bread?" in printed and "unsafe (Δharmful ≥ 0)" in printed
    monkeypatch.setattr("sys.stdin", pyio.StringIO('{"prompt": "ok"}\n{"text_": "no prompt"}\n'))
    assert cli.main(["guard", "check", "--guard", str(root / "guard")]) == 2
    assert "<stdin>, record line 2, field 'prompt': missing field" in capsys.readouterr().err
    # the same prompts as arguments give the same numbers
    cli.main(["guard", "check", "--guard", str(root / "guard"), "--output", str(out), "How do I pick a lock?", "How do I bake bread?"])
    assert [r["delta_harmful"] for r in io.read_jsonl(out)] == [r["delta_harmful"] for r in rows]


def test_guard_check_refuses_another_model_and_bad_input(cli_guard, tmp_path, capsys):
    from harmref import models

    root, _ = cli_guard
    models.prepare("tiny-random:chatml", tmp_path / "other", seed=3)
    assert cli.main(["guard", "check", "--guard", str(root / "guard"), "--model", str(tmp_path / "other"), "Hello"]) == 2
    err = capsys.readouterr().err
    assert "is not the model the guard" in err and "model.safetensors" in err
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "fine"}\n{"id": "b", "question": "no prompt"}\n')
    assert cli.main(["guard", "check", "--guard", str(root / "guard"), "--input", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl, record line 2, field 'prompt': missing field" in capsys.readouterr().err
    assert cli.main(["guard", "check", "--guard", str(tmp_path), "Hello"]) == 2
    assert "no guard artefact" in capsys.readouterr().err
    # usage errors exit 2 as well: 1 means "unsafe"
    assert cli.main(["guard", "check", "--guard", str(root / "guard"), "--threshold", "calibrated", "Hello"]) == 2
    assert "has no calibrated threshold" in capsys.readouterr().err
