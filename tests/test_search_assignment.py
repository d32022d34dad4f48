"""The assignment solver against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from minidml.search import assign


def test_assignment_is_optimal():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 4)
        m = rng.randint(n, 6)
        cost = [[rng.randint(0, 9) for _ in range(m)] for _ in range(n)]
        got = assign(cost)
        assert len(set(got)) == n
        best = min(sum(cost[i][p[i]] for i in range(n))
                   for p in itertools.permutations(range(m), n))
        assert sum(cost[i][got[i]] for i in range(n)) == best


@pytest.mark.parametrize("scale", [1, 10**12, 10**20])
def test_assignment_is_exact_on_large_integers(scale):
    """The search's costs are lexicographic, digits of 10**12: no float rounding may reorder
    them (at 10**20, 3·scale + 1 and 3·scale are the same float)."""
    cost = [[3 * scale + 1, 3 * scale], [3 * scale, 3 * scale + 2]]
    assert assign(cost) == [1, 0]
    assert assign([[5]]) == [0]
