"""Settings of an evaluation run (:class:`EvalConfig`), importable without torch or numpy.

The command line reads its defaults from here (``sammed3d evaluate --help`` stays fast), and
:func:`sammed3d.evaluation.evaluate_targets` takes an instance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from sammed3d.clicks import ClickStrategy

#: Where the ROI of a target is centred: the ground-truth box (published) or the first click.
RoiMode = Literal["gt", "click"]
ROI_MODES: tuple[str, ...] = get_args(RoiMode)


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation run.

    Attributes:
        clicks: Click counts to report (e.g. ``(1, 3, 5, 10)``); clicks ``1..max`` are run.
        strategy: Click strategy per click index; the last entry repeats. ``("random",)`` is
            the current published protocol; ``("center",)`` the RITM/EDT rule at every click;
            ``("center", "center", "random")`` the legacy ``validation.py`` default.
        roi: ``"gt"`` (ROI centred on the ground-truth bounding box) or ``"click"``.
        seed: Base seed; each target's generator is seeded by ``(seed, crc32(target))``.
        tolerance_mm: NSD tolerance.
        metrics: Metrics per click among ``dice, nsd, iou, hd95`` (``dice`` is required).
    """

    clicks: tuple[int, ...] = (1, 3, 5, 10)
    strategy: tuple[ClickStrategy, ...] = ("random",)
    roi: RoiMode = "gt"
    seed: int = 2023
    tolerance_mm: float = 1.0
    metrics: tuple[str, ...] = ("dice", "nsd", "iou")

    def __post_init__(self) -> None:
        # the names are checked against their owners, imported here so that reading the
        # defaults (the command line's --help) loads neither torch nor numpy
        from sammed3d.clicks import CLICK_STRATEGIES
        from sammed3d.evaluation.metrics import METRIC_NAMES

        clicks = tuple(sorted({int(k) for k in self.clicks}))
        if not clicks or clicks[0] < 1:
            raise ValueError(f"clicks must be positive integers, got {list(self.clicks)}")
        if clicks[-1] > 1000:
            raise ValueError(f"at most 1000 clicks per target, got {clicks[-1]}")
        object.__setattr__(self, "clicks", clicks)
        strategy = (self.strategy,) if isinstance(self.strategy, str) else tuple(self.strategy)
        bad = [s for s in strategy if s not in CLICK_STRATEGIES]
        if not strategy or bad:
            raise ValueError(
                f"strategy must be a list of {list(CLICK_STRATEGIES)}, got {list(strategy)}"
            )
        object.__setattr__(self, "strategy", strategy)
        if self.roi not in ROI_MODES:
            raise ValueError(f"roi must be one of {list(ROI_MODES)}, got {self.roi!r}")
        if not (self.tolerance_mm >= 0 and math.isfinite(self.tolerance_mm)):
            raise ValueError(f"tolerance_mm must be a finite number >= 0, got {self.tolerance_mm}")
        metrics = tuple(self.metrics)
        unknown = [m for m in metrics if m not in METRIC_NAMES]
        if unknown or "dice" not in metrics:
            raise ValueError(
                f"metrics must include dice and be among {list(METRIC_NAMES)}, got {list(metrics)}"
            )
        object.__setattr__(self, "metrics", tuple(m for m in METRIC_NAMES if m in metrics))

    @property
    def max_clicks(self) -> int:
        return self.clicks[-1]

    def strategy_for(self, click: int) -> ClickStrategy:
        """Strategy of click ``click`` (1-based)."""
        return self.strategy[min(click, len(self.strategy)) - 1]

    def identity(self) -> dict[str, Any]:
        """The settings that results depend on (everything but the reported click counts)."""
        d = asdict(self)
        d.pop("clicks")
        d["strategy"] = list(self.strategy)
        d["metrics"] = list(self.metrics)
        return d


__all__ = ["ROI_MODES", "EvalConfig", "RoiMode"]
