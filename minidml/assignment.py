"""Minimum-cost assignment of rows to distinct columns: the Hungarian algorithm (Kuhn and
Munkres, in the O(n²m) form with potentials), exact on integer costs. The student search
(:mod:`minidml.search`) uses it to give each target its own shape at the least total cost."""

from __future__ import annotations


def assign(cost: list[list[int]]) -> list[int]:
    """Minimum-cost assignment of rows to distinct columns (Hungarian algorithm, rows <= columns);
    returns each row's column. Exact on integers; deterministic."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u, v = [0] * (n + 1), [0] * (m + 1)
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: row (1-based) holding column j
    for row in range(1, n + 1):
        owner[0], j0 = row, 0
        minv, done = [inf] * (m + 1), [False] * (m + 1)
        while True:
            done[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            for j in range(1, m + 1):
                if not done[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if done[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    result = [0] * n
    for j in range(1, m + 1):
        if owner[j]:
            result[owner[j] - 1] = j - 1
    return result
