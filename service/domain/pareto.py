"""The Pareto front of a multi-objective study: which points no other point beats.

Point `a` dominates point `b` when `a` is at least as good as `b` on every objective and strictly
better on at least one, "good" being read through each objective's direction. The front is every
point nothing dominates. Pure arithmetic over lists of floats, so the API's `best`, the page and
the model keeper (which keeps the files of front trials) all compute the same set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DIRECTIONS = ("maximize", "minimize")


def _signs(directions: Sequence[str]) -> list[float]:
    signs = []
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; use maximize or minimize")
        signs.append(1.0 if direction == "minimize" else -1.0)
    return signs


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when `a` is no worse than `b` on every objective and better on at least one.

    Equal points do not dominate each other. Raises ValueError for a direction other than
    maximize/minimize or when the lengths differ.
    """
    signs = _signs(directions)
    if not len(a) == len(b) == len(signs):
        raise ValueError(f"{len(a)} and {len(b)} values for {len(signs)} objectives")
    return _dominates(
        [s * x for s, x in zip(signs, a, strict=True)],
        [s * x for s, x in zip(signs, b, strict=True)],
    )


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    # Both already turned into "smaller is better".
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def pareto_front(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The indices (into `values`, ascending) of the points no other point dominates.

    - Ties: a point equal to another on one objective and worse on none is kept (it is not
      dominated); both ends of a tie stay on the front.
    - Duplicates: identical points do not dominate each other, so every copy of a front point is
      returned (two trials that reached the same values are both on the front).
    - NaN values: a point with a NaN is never on the front and dominates nothing.
    - An empty `values` gives an empty front.

    Raises ValueError when `directions` holds something other than maximize/minimize or a point
    has a different number of values than there are directions.
    """
    signs = _signs(directions)
    points: dict[int, list[float]] = {}
    for index, point in enumerate(values):
        if len(point) != len(signs):
            raise ValueError(f"point {index} has {len(point)} values for {len(signs)} objectives")
        floats = [s * float(x) for s, x in zip(signs, point, strict=True)]
        if not any(math.isnan(x) for x in floats):
            points[index] = floats
    # Sorted lexicographically, a point can only be dominated by one before it, so each point is
    # compared with the front found so far (O(n * front) rather than O(n^2)).
    front: list[int] = []
    for i in sorted(points, key=points.__getitem__):
        if not any(_dominates(points[j], points[i]) for j in front):
            front.append(i)
    return sorted(front)
