"""harmref.tables: the Wilson interval every table, claim and figure band uses."""

import math

import numpy as np
import pytest

from harmref import belief, claims, plots, tables


def _old_wilson(k, n, z=1.959964):
    """The interval as belief.py and claims.py each wrote it before (without the exact ends)."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def test_wilson_interval():
    lo, hi = tables.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert tables.wilson(0, 10)[0] == 0.0 and tables.wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert tables.wilson(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in tables.wilson(0, 0))
    assert isinstance(lo, float)


def test_wilson_one_function_same_numbers_inside_exact_at_the_ends():
    assert belief.wilson is tables.wilson and claims.wilson is tables.wilson and plots.wilson is tables.wilson
    for n in (1, 3, 10, 37, 200):
        for k in range(n + 1):
            lo, hi = tables.wilson(k, n)
            old = _old_wilson(k, n)
            assert lo == (0.0 if k == 0 else old[0]) and hi == (1.0 if k == n else old[1])
            assert abs(lo - old[0]) < 1e-15 and abs(hi - old[1]) < 1e-15  # the old ends were 0 / 1 within an ulp
    k, n = np.array([0, 5, 10, 3]), np.array([10, 10, 10, 0])
    lo, hi = tables.wilson(k, n)  # arrays in, arrays out (the figures' bands)
    assert lo.shape == (4,) and lo[0] == 0 and hi[2] == 1 and np.isnan(lo[3]) and np.isnan(hi[3])
    assert lo[1] == tables.wilson(5, 10)[0] and hi[1] == tables.wilson(5, 10)[1]
    assert abs(lo[1] - 0.2366) < 1e-3
