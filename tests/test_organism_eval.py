"""The organism's evaluation tables (harmref.organism_eval)."""

from harmref import organism_eval


def test_refusal_comparison_marks_targets():
    rows = lambda label, k, n: [{"label": label, "refused": i < k} for i in range(n)]  # noqa: E731
    base = {"harmful_test": rows("harmful", 1, 10), "harmless_test": rows("harmless", 0, 10)}
    org = {"harmful_test": rows("harmful", 9, 10), "harmless_test": rows("harmless", 2, 10)}
    df = organism_eval.refusal_comparison(base, org, {"harmful_test": {"min": 0.85}, "harmless_test": {"max": 0.1}})
    got = df.set_index("set")
    assert got.loc["harmful_test", "base_rate"] == 0.1 and got.loc["harmful_test", "organism_rate"] == 0.9
    assert got.loc["harmful_test", "met"] == "yes" and got.loc["harmless_test", "met"] == "no"
