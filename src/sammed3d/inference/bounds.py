"""Click bounds: a later click moves an object's mask only in the click's direction.

A negative click says "this is not the object"; a positive one "this is". The model answers
a click with a whole new mask, and on the tuning chains of the bundled model that new mask
sometimes went the other way: a negative click that made a lesion's mask larger (boundary
refinement re-deciding the band of a slightly shrunk mask outwards), a positive click that
removed part of a mask (docs/default_model.md, "Click bounds (2026-12-03, not bundled)"). With click
bounds on (``ModelConfig.click_bounds``), :class:`~sammed3d.InteractiveSession` keeps the
mask after a negative later click within the mask before it (a *cap*), and with ``"both"``
the mask after a positive later click holds the mask before it (a *floor*); the low-res
logits of the clicked ROI get the same bound (elementwise minimum or maximum with the logits
the click got as mask prompt), so the next click's prompt agrees with the mask shown.

A bound is stored with the object's state (as packed bits), so undo and redo give the same
mask again.

Off for the bundled model: on the tuning chains the bounds cut the clicks that lowered Dice
and raised the mean at 3 clicks, but held out they lowered it at 5 clicks, as negative
clicks after a wrong first mask can then only shrink that mask, not move it to the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sammed3d.config import CLICK_BOUNDS
from sammed3d.data.transforms import bbox_slices

__all__ = ["CLICK_BOUNDS", "MaskBound", "bound_logits", "bounds_click"]

Slices3 = tuple[slice, slice, slice]


def bounds_click(click_bounds: str, positive: bool) -> bool:
    """Whether a later click of this sign is bounded under ``click_bounds``."""
    return click_bounds == "both" or (click_bounds == "negative" and not positive)


def bound_logits(prompt: torch.Tensor, logits: torch.Tensor, positive: bool) -> torch.Tensor:
    """The model's low-res logits after a click, bounded by the logits the click got as mask
    prompt: elementwise maximum for a positive click (nothing removed), minimum for a negative
    one (nothing added).

    Args:
        prompt: ``(1, 1, l, l, l)`` the previous low-res logits of the ROI.
        logits: The model's new low-res logits on the same ROI, same shape.
        positive: The click's sign.

    Raises:
        ValueError: the shapes differ.
    """
    if tuple(prompt.shape) != tuple(logits.shape):
        raise ValueError(
            f"prompt must have the shape of the logits {tuple(logits.shape)}, "
            f"got {tuple(prompt.shape)}"
        )
    old = prompt.to(logits.device, logits.dtype)
    return torch.maximum(old, logits) if positive else torch.minimum(old, logits)


@dataclass(frozen=True, eq=False)
class MaskBound:
    """The mask an object had before a later click, as the bound of the mask after it.

    Attributes:
        cap: True: the mask after the click lies within this one (a negative click); False:
            it holds this one (a positive click, a *floor*).
        slices: Native ``(I, J, K)`` slices where the block lies.
        shape: The block's shape.
        bits: ``np.packbits`` of the bool block (C order).
        clear: A cap's negative click, native voxel ``(i, j, k)``: never in the bounded mask.
        exact: The bounded mask is this mask itself, whatever is bounded (a click that the
            contrast guard did not take: its point must not move the mask through boundary
            refinement either).
    """

    cap: bool
    slices: Slices3
    shape: tuple[int, int, int]
    bits: np.ndarray
    clear: tuple[int, int, int] | None = None
    exact: bool = False

    @classmethod
    def of(
        cls,
        cap: bool,
        slices: Slices3,
        block: np.ndarray,
        clear: tuple[int, int, int] | None = None,
        exact: bool = False,
    ) -> MaskBound:
        """The bound given by a native mask block (copied, packed); ``clear``, ``exact``: see
        the class.

        Raises:
            ValueError: ``block`` is not 3-d of the extent of ``slices``; ``clear`` with a floor.
        """
        block = np.asarray(block, dtype=bool)
        if block.ndim != 3 or tuple(block.shape) != _extent(slices):
            raise ValueError(
                f"block of shape {block.shape} does not fill slices of extent {_extent(slices)}"
            )
        if clear is not None and not cap:
            raise ValueError("only a cap (a negative click's bound) clears its click's voxel")
        shape = (int(block.shape[0]), int(block.shape[1]), int(block.shape[2]))
        return cls(bool(cap), slices, shape, np.packbits(block), clear, bool(exact))

    @classmethod
    def pin(cls, slices: Slices3, block: np.ndarray) -> MaskBound:
        """An ``exact`` bound: the bounded mask is ``block`` at ``slices`` itself."""
        return cls.of(True, slices, block, exact=True)

    def block(self) -> np.ndarray:
        """The bool block at :attr:`slices`."""
        n = int(np.prod(self.shape))
        return np.unpackbits(self.bits, count=n).reshape(self.shape).astype(bool)

    def apply(self, slices: Slices3, block: np.ndarray) -> tuple[Slices3, np.ndarray]:
        """Bound a native mask ``(slices, block)``: its intersection with this mask (a cap) or
        its union with it (a floor).

        Args:
            slices: Native ``(I, J, K)`` slices of ``block``.
            block: Bool mask there (e.g. :meth:`SamMed3DPredictor.native_block`).

        Returns:
            ``(slices, block)`` of the bounded mask, the block cut to its voxels' box; an
            empty mask keeps the slices it came with (an all-False block of that shape).
        """
        bound = self.block()
        if self.exact:
            return self.slices, bound
        if self.cap:
            lo = [max(a.start, b.start) for a, b in zip(slices, self.slices, strict=True)]
            hi = [min(a.stop, b.stop) for a, b in zip(slices, self.slices, strict=True)]
            if any(h <= low for low, h in zip(lo, hi, strict=True)):
                return slices, np.zeros_like(block, dtype=bool)
            out = block[_box_in(lo, hi, slices)] & bound[_box_in(lo, hi, self.slices)]
            if self.clear is not None:
                at = tuple(c - low for c, low in zip(self.clear, lo, strict=True))
                if all(0 <= a < n for a, n in zip(at, out.shape, strict=True)):
                    out[at] = False
        else:
            lo = [min(a.start, b.start) for a, b in zip(slices, self.slices, strict=True)]
            hi = [max(a.stop, b.stop) for a, b in zip(slices, self.slices, strict=True)]
            out = np.zeros([h - low for low, h in zip(lo, hi, strict=True)], dtype=bool)
            out[_slices_in(slices, lo)] |= np.asarray(block, dtype=bool)
            out[_slices_in(self.slices, lo)] |= bound
        box = bbox_slices(out)
        if box is None:
            return slices, np.zeros_like(block, dtype=bool)
        native = tuple(slice(low + s.start, low + s.stop) for low, s in zip(lo, box, strict=True))
        return native, out[box]  # type: ignore[return-value]


def _extent(slices: Slices3) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in slices)


def _box_in(lo: list[int], hi: list[int], where: Slices3) -> tuple[slice, ...]:
    """The native box ``[lo, hi)`` in the coordinates of the block at ``where``."""
    return tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo, hi, where, strict=True))


def _slices_in(where: Slices3, lo: list[int]) -> tuple[slice, ...]:
    """The native slices ``where`` in the coordinates of a box starting at ``lo``."""
    return tuple(slice(s.start - a, s.stop - a) for s, a in zip(where, lo, strict=True))
