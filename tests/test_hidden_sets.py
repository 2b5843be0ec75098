import pytest
import torch

from harmref import hidden_sets, io, judging


def test_load_set_names_the_file_record_and_field(tmp_path):
    h = tmp_path / "h.safetensors"
    io.write_tensors(h, {"hidden": torch.zeros(2, 3, 2, 4)}, {"ids": ["a", "b"], "positions": ["t_inst", "post_1"]})
    g = tmp_path / "g.jsonl"
    io.write_jsonl(g, [{"id": "a", "prompt": "x", "refused": True, "label": "harmful"}])
    with pytest.raises(io.DataError, match=r"g\.jsonl, record b, field 'id'"):
        hidden_sets.load(h, g, ["t_inst", "post_1"])
    io.write_jsonl(g, [{"id": "a", "prompt": "x", "label": "harmful"}])
    with pytest.raises(io.DataError, match=r"g\.jsonl, record line 1, field 'refused'"):
        hidden_sets.load(h, g, ["t_inst", "post_1"])
    with pytest.raises(io.DataError, match="positions"):
        hidden_sets.load(h, g, ["t_inst"])
    io.write_jsonl(g, [{"id": k, "prompt": "x", "refused": None if k == "b" else True, "label": "harmful"} for k in "ab"])
    with pytest.raises(judging.InvalidVerdicts, match=r"g\.jsonl: 1 of 2 records have no refusal verdict"):
        hidden_sets.load(h, g, ["t_inst", "post_1"])
    io.write_jsonl(g, [{"id": k, "prompt": "x", "refused": k == "b", "label": "harmful"} for k in "ab"])
    hs = hidden_sets.load(h, g, ["t_inst", "post_1"])
    assert hs.ids == ["a", "b"] and hs.hidden.shape == (2, 3, 2, 4) and hs.by_id["b"]["refused"]
    assert hs.refused() == [False, True] and hs.labels == ["harmful", "harmful"]


def test_rows_follow_the_hidden_states_order_not_the_generations(tmp_path):
    h = tmp_path / "h.safetensors"
    io.write_tensors(h, {"hidden": torch.arange(3.0).reshape(3, 1, 1, 1)}, {"ids": ["c", "a", "b"], "positions": ["t_inst"]})
    g = tmp_path / "g.jsonl"
    io.write_jsonl(g, [{"id": k, "prompt": k, "refused": k == "a", "label": "harmless" if k == "b" else "harmful"}
                       for k in "abcd"])  # an extra generation (d) is allowed
    hs = hidden_sets.load(h, g)
    assert hs.ids == ["c", "a", "b"] and hs.refused() == [False, True, False]
    assert hs.labels == ["harmful", "harmful", "harmless"] and hs.hidden.flatten().tolist() == [0.0, 1.0, 2.0]
    assert hs.meta["ids"] == ["c", "a", "b"] and hs.source == str(g)


def test_invalid_verdicts_allowed_where_asked(tmp_path):
    h = tmp_path / "h.safetensors"
    io.write_tensors(h, {"hidden": torch.zeros(1, 1, 1, 1)}, {"ids": ["a"], "positions": ["t_inst"]})
    g = tmp_path / "g.jsonl"
    io.write_jsonl(g, [{"id": "a", "prompt": "x", "refused": None, "label": "harmful"}])
    with pytest.raises(judging.InvalidVerdicts):
        hidden_sets.load(h, g)
    assert hidden_sets.load(h, g, valid_verdicts=False).by_id["a"]["refused"] is None


