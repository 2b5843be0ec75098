import pandas as pd
import pytest

from harmref import plots


def test_fig2_right_panel_is_the_last_captured_position():
    """Regression: positions sort alphabetically in groupby output, so 't_inst-2' came last and was plotted as t_post-inst."""
    rows = [{"group": "refused-harmful", "position": p, "layer": l, "mean_s": v, "n": 3}
            for p, v in (("t_inst-2", -9.0), ("t_inst", 0.1), ("post_6", 0.5)) for l in range(3)]
    pooled = pd.DataFrame(rows).sort_values(["group", "position", "layer"])
    fig = plots.clustering_figure(pooled, "m", "post_6")
    left, right = fig.axes[:2]
    assert "post_6" in right.get_title()
    assert list(right.lines[0].get_ydata()) == [0.5, 0.5, 0.5]
    assert list(left.lines[0].get_ydata()) == [0.1, 0.1, 0.1]


# ---------------------------------------------------------------- figures a reader of the paper trusts
def _axes_with_data(fig):
    return [ax for ax in fig.axes if ax.lines or ax.collections or ax.patches]


def _labelled(fig):
    for ax in _axes_with_data(fig):
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())


def _legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def _cos(layers=6):
    import numpy as np

    x = np.linspace(0.1, 0.6, layers)
    return pd.DataFrame({"layer": range(layers), "cos_harm_inst__refusal_post": x, "cos_harm_inst__harm_post": x + 0.001,
                         "cos_harm_post__refusal_post": np.full(layers, 0.99), "cos_harm_inst__refusal_inst": np.full(layers, 0.9)})


def test_cosine_curves_that_coincide_say_so_and_stay_visible():
    fig = plots.cosine_figure(_cos(), "m")
    texts = _legend_texts(fig)
    control = [t for t in texts if t.startswith("harm@t_inst vs harm@t_post-inst")]
    assert len(control) == 1 and "at every layer" in control[0], texts
    assert sum("at every layer" in t for t in texts) == 1  # the others differ
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    under, over = lines[next(t for t in texts if "the paper's comparison" in t)], lines[control[0]]
    assert under.get_linewidth() > 2 * over.get_linewidth() and under.get_marker() != over.get_marker()
    assert not any(t.startswith("paper") for t in texts)  # the tiny model is not one of the paper's
    _labelled(fig)


def test_cosine_overlays_the_paper_value_for_a_paper_model():
    fig = plots.cosine_figure(_cos(), "llama2-7b-chat")
    paper = [t for t in _legend_texts(fig) if t.startswith("paper (Llama2-Chat-7B)")]
    assert paper and "0.1" in paper[0] and "paper text" in paper[0] and "≈" not in paper[0], paper


def _pooled(sd=True):
    rows = [{"group": g, "position": p, "layer": l, "mean_s": v + 0.01 * l, "n": 4, **({"sd_s": 0.05} if sd else {})}
            for g, v in (("refused-harmful", 0.2), ("accepted-harmless", -0.2), ("accepted-harmful", 0.05), ("refused-harmless", -0.03))
            for p in ("t_inst", "post_2") for l in range(5)]
    return pd.DataFrame(rows)


def test_fig2_bands_and_paper_ranges():
    fig = plots.clustering_figure(_pooled(), "m", "post_2")
    assert all(len(ax.collections) == 4 for ax in fig.axes[:2])  # one ± 1.96 SE band per group
    assert not any(t.startswith("paper") for t in _legend_texts(fig))
    _labelled(fig)
    fig = plots.clustering_figure(_pooled(sd=False), "qwen2-7b-instruct", "post_2")
    assert all(not ax.collections for ax in fig.axes[:2])
    texts = _legend_texts(fig)
    assert any(t.startswith("paper (Qwen2-Instruct-7B) accepted-harmful: ≈ 0.01…0.04") for t in texts), texts
    assert any("read off the paper's figure" in t for t in texts)


def test_fig14_has_both_axis_labels():
    table = pd.DataFrame({"position": ["t_inst-1", "t_inst", "post_1"], "accepted-harmful": [0.0, 0.1, -0.1],
                          "refused-harmless": [0.0, -0.1, 0.1]})
    _labelled(plots.positions_figure(table, "m", (1, 3)))


def test_accuracy_band_from_n():
    acc = pd.DataFrame({"layer": [0, 1, 2, "mean-over-layers (Δharmful)"], "acc_inst": [0.5, 0.75, 1.0, 0.9],
                        "acc_post": [0.5, 0.5, 0.6, 0.6], "n": 16})
    fig = plots.accuracy_figure(acc, "m")
    assert len(fig.axes[0].collections) == 2 and any("n=16" in t for t in _legend_texts(fig))
    _labelled(fig)


def _fig4(model_arms=("+harmfulness@all", "+refusal@all")):
    rows = [{"model": "m", "experiment": "refusal", "set": "harmless_test", "arm": "baseline", "control": "baseline",
             "layer": None, "n": 10, "rate_%": 10.0, "score": -1.0}]
    rows += [{"model": "m", "experiment": "refusal", "set": "harmless_test", "arm": a, "control": "layer_sweep", "layer": l,
              "n": 10, "rate_%": 10.0 * l + 10 * k, "score": 0.1 * l} for k, a in enumerate(model_arms) for l in range(1, 7, 2)]
    return pd.DataFrame(rows)


def test_fig4_wilson_bands_and_the_papers_peaks_only_for_a_paper_model():
    fig = plots.steering_refusal_figure(_fig4(), "m")
    rate = fig.axes[0]
    assert len(rate.collections) == 2  # one Wilson band per arm
    assert not any("paper" in t for t in _legend_texts(fig)), _legend_texts(fig)
    _labelled(fig)
    fig = plots.steering_refusal_figure(_fig4(), "llama3-8b-instruct")
    texts = _legend_texts(fig)
    assert any(t.startswith("paper (Llama3-Instruct-8B) harmfulness: 94 % (layer 9), paper text") for t in texts), texts
    assert any(t.startswith("paper (Llama3-Instruct-8B) baseline: ≈ 5…9 %") for t in texts), texts


def _controls():
    rows = []
    for exp, set_, q, arm in (("refusal", "harmless_test", None, "+refusal@all"), ("inversion", "harmful_test", "q1", "-harmfulness@context")):
        for c in (0.5, 2, 4):
            rows.append({"experiment": exp, "set": set_, "question_id": q, "arm": arm, "layer": 4, "control": "coefficient",
                         "coeff": c, "delta_%": 10 * c, "reference_coeff": 1.0, "reference_%": 30.0, "baseline_%": 5.0})
        for ctl in ("norm_matched", "scope_swap"):
            rows.append({"experiment": exp, "set": set_, "question_id": q, "arm": arm, "layer": 4, "control": ctl,
                         "coeff": 1.0, "delta_%": 3.0, "reference_coeff": 1.0, "reference_%": 30.0, "baseline_%": 5.0})
    return pd.DataFrame(rows)


def test_steering_controls_one_metric_per_axis():
    fig = plots.steering_controls_figure(_controls(), "m")
    axes = _axes_with_data(fig)
    assert len(axes) == 4
    refusal, inversion = [ax for ax in axes if ax.get_title().startswith("refusal")], [ax for ax in axes if ax.get_title().startswith("inversion")]
    assert len(refusal) == len(inversion) == 2
    for ax in refusal:  # the metric is the y axis of the coefficient sweep, the x axis of the bar chart
        label = ax.get_ylabel() if "coefficient" in ax.get_title() else ax.get_xlabel()
        assert "refusal rate" in label and '"No"' not in label
    for ax in inversion:
        label = ax.get_ylabel() if "coefficient" in ax.get_title() else ax.get_xlabel()
        assert '"No"' in label and "refusal rate" not in label
    bars = [ax for ax in inversion if "coefficient" not in ax.get_title()][0]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["harmful_test q1 · -harmfulness@context @L4"]
    _labelled(fig)


def test_fig6_paper_boxes_only_for_llama2():
    rows = [{"group": g, "delta_harmful": h, "delta_refuse": r} for g, h, r in
            (("refused-harmful", 0.1, 0.3), ("accepted-harmless", -0.1, -0.2), ("jailbreak: template", 0.1, -0.1))]
    groups = pd.DataFrame(rows * 3)
    fig = plots.jailbreak_figure(groups, "m")
    assert not any(t.startswith("paper") for t in _legend_texts(fig))
    fig = plots.jailbreak_figure(groups, "llama2-7b-chat")
    texts = [t for t in _legend_texts(fig) if t.startswith("paper (Llama2-Chat-7B)")]
    assert any(t.startswith("paper (Llama2-Chat-7B) template: Δh ≈ 0.06…0.15, Δr ≈ -0.16…0") for t in texts), texts
    assert len(fig.axes[0].patches) >= 3  # dashed boxes: template, adv-suffix, persuasion
    _labelled(fig)


def test_fig5_paper_values_land_on_their_prompt_set():
    rows = []
    for set_, arm in (("harmless_test", "+harmfulness@context"), ("harmful_test", "-harmfulness@context")):
        rows.append({"set": set_, "question_id": "Q1", "arm": "baseline", "control": "baseline", "layer": None, "n": 10,
                     "n_valid": 10, "no_%": 50.0, "invalid_%": 0.0, "refusal_text_%": 0.0, "score": 0.0})
        rows += [{"set": set_, "question_id": "Q1", "arm": arm, "control": "layer_sweep", "layer": l, "n": 10, "n_valid": 8,
                  "no_%": 25.0, "invalid_%": 20.0, "refusal_text_%": 0.0, "score": 0.1} for l in range(0, 14, 2)]
    table = pd.DataFrame(rows)
    fig = plots.reply_inversion_figure(table, "m")
    assert not any("paper" in t for t in _legend_texts(fig))
    fig = plots.reply_inversion_figure(table, "qwen2-7b-instruct")
    no_panels = [ax for ax in fig.axes if ax.get_ylabel().startswith('"No"')]
    assert len(no_panels) == 2
    harmless, harmful = no_panels  # columns in table order
    assert "harmless_test" in harmless.get_title() and "harmful_test" in harmful.get_title()
    legends = _legend_texts(fig)
    assert any(t.startswith("paper (Qwen2-Instruct-7B) +harmfulness@context: ≈ 0 % (layer 11)") for t in legends), legends
    assert any(t.startswith("paper (Qwen2-Instruct-7B) -harmfulness@context: ≈ 52 % (layer 12)") for t in legends), legends
    # the harmless column's diamond sits at layer 11, the harmful column's at layer 12
    xs = lambda ax: sorted(float(x) for c in ax.containers for x in c.lines[0].get_xdata())  # noqa: E731
    assert 11.0 in xs(harmless) and 12.0 in xs(harmful) and 12.0 not in xs(harmless)
    _labelled(fig)


def test_attack_figure_one_curve_per_attack_size():
    layers = pd.DataFrame([{"n_pairs": n, "layer": l, "delta_harmful": 0.1 * l - 0.01 * n, "delta_refuse": 0.2 - 0.05 * n}
                           for n in (0, 10, 50) for l in (2, 0, 1)])
    fig = plots.attack_figure(layers, "tiny")
    harm, ref = fig.axes[:2]
    assert harm.get_title().startswith("Δharmful") and ref.get_title().startswith("Δrefuse")
    assert [line.get_label() for line in harm.lines[:3]] == ["before attack", "attacked, N = 10", "attacked, N = 50"]
    assert list(harm.lines[0].get_xdata()) == [0, 1, 2]  # sorted by layer
    assert list(ref.lines[2].get_ydata()) == pytest.approx([0.2 - 2.5] * 3)
    assert "paper Fig 7" in fig._suptitle.get_text()
