"""Changed-box replies equal a brute-force diff of the whole volume."""

from __future__ import annotations

import numpy as np

from sammed3d.serve.patch import diff, tight_box, union


def _blob(shape, lo, hi, value=1, dtype=bool):  # noqa: ANN001, ANN202
    out = np.zeros(shape, dtype=dtype)
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = value
    return out


def test_diff_sequence_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    shape = (20, 17, 23)
    client = np.zeros(shape, dtype=np.uint8)
    held = None
    for _ in range(30):
        lo = rng.integers(0, 10, 3)
        hi = lo + rng.integers(1, 8, 3)
        new = _blob(shape, lo, hi, value=rng.integers(1, 4), dtype=np.uint8)
        new &= (rng.uniform(size=shape) > 0.3).astype(np.uint8) * 255
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        change, held = diff(new, held, box)
        changed = tight_box(client != new)  # the box a perfect reply would carry
        assert (change is None) == (changed is None)
        if change is not None:
            assert change.slices == changed
            client[change.slices] = change.values
        np.testing.assert_array_equal(client, new)
        expected = tight_box(new != 0)
        assert (held is None) == (expected is None)
        if held is not None:
            assert held.slices == expected


def test_no_change_no_patch() -> None:
    mask = _blob((8, 8, 8), (2, 2, 2), (5, 6, 7))
    change, held = diff(mask, None, (slice(0, 8),) * 3)
    assert change is not None and change.box == [[2, 5], [2, 6], [2, 7]]
    again, held2 = diff(mask, held, (slice(0, 8),) * 3)
    assert again is None and held2 is not None and held2.box == held.box
    cleared, held3 = diff(np.zeros_like(mask), held, None)
    assert cleared is not None and not cleared.values.any() and held3 is None


def test_union_ignores_empty_boxes() -> None:
    assert union([None, (slice(3, 3), slice(0, 1), slice(0, 1))]) is None
    box = union([(slice(1, 4), slice(2, 3), slice(0, 9)), (slice(0, 2), slice(5, 6), slice(3, 4))])
    assert box == (slice(0, 4), slice(2, 6), slice(0, 9))
