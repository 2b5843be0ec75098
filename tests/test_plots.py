import pandas as pd

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
