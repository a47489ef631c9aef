"""bench/benchlib.py: the statistics the benches' verdicts rest on."""
import math
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

from benchlib import median_ci  # noqa: E402  pylint: disable=wrong-import-position


def _coverage(n, r):
    """Exact coverage of [x_(r), x_(n-r+1)] for the median of a continuous law."""
    return 1 - 2 * sum(math.comb(n, k) for k in range(r)) / 2 ** n


@pytest.mark.parametrize("n, ranks", [(6, (1, 6)), (11, (2, 10)), (21, (6, 16)), (41, (14, 28))])
def test_median_ci_ranks_from_the_binomial(n, ranks):
    low, high = median_ci(range(1, n + 1))
    assert (low, high) == ranks
    r = low
    assert _coverage(n, r) >= 0.95 > _coverage(n, r + 1)  # the narrowest interval that still covers 95%


def test_median_ci_ignores_order_and_needs_six_values():
    values = [1.52, 1.31, 1.44, 1.38, 1.61, 1.40, 1.47, 1.29, 1.43, 1.35, 1.50]
    assert median_ci(values) == (1.31, 1.52)
    assert median_ci(values[:5]) is None


def test_median_ci_covers_the_true_median_about_95_percent():
    rnd = random.Random(9)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (median_ci([rnd.gauss(0, 1) for _ in range(21)]) for _ in range(2000)))
    assert 0.94 <= hits / 2000 <= 0.985
