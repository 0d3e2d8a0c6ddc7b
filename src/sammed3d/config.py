"""Typed model configuration (field names follow ``shared/fixtures/sammed3d_small.json``)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

#: Widest boundary band (mm) of ``refine_boundary``: beyond it the band is no boundary
#: correction any more (and its outside ring leaves the ROI).
MAX_REFINE_BOUNDARY_MM = 10.0


#: Highest ``contrast_guard`` (border contrasts of real structures lie around 0.5-2).
MAX_CONTRAST_GUARD = 10.0

#: Widest ``rim_edit`` radius (mm): beyond it the edit is no local one for a small object.
MAX_RIM_EDIT_MM = 10.0


def _checked(name: str, value: object, high: float, what: str) -> float:
    """``value`` as a float in ``[0, high]`` (0: off); numpy scalars count, bools do not.

    Raises:
        ValueError: naming ``name`` and the range (``what`` formatted with ``high``).
    """
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 <= value <= high
    ):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        shown = f"{float(value):g}" if real else repr(value)  # type: ignore[arg-type]
        raise ValueError(f"{name} must be 0 (off) or {what.format(high)}, got {shown}")
    return float(value) + 0.0  # -0.0 -> 0.0


def check_refine_boundary(value: object, name: str = "refine_boundary") -> float:
    """``value`` as a boundary refinement width in mm (0: off).

    Args:
        value: The width.
        name: What the error calls it (a field, or a command-line flag).

    Raises:
        ValueError: not a number, not finite, negative or above ``MAX_REFINE_BOUNDARY_MM``.
    """
    return _checked(name, value, MAX_REFINE_BOUNDARY_MM, "a width of at most {:g} mm")


def check_rim_edit(value: object, name: str = "rim_edit") -> float:
    """``value`` as the rim edit's radius in mm (0: off).

    Args:
        value: The radius.
        name: What the error calls it (a field, or a command-line flag).

    Raises:
        ValueError: not a number, not finite, negative or above ``MAX_RIM_EDIT_MM``.
    """
    return _checked(name, value, MAX_RIM_EDIT_MM, "a radius of at most {:g} mm")


def check_contrast_guard(value: object, name: str = "contrast_guard") -> float:
    """``value`` as the contrast guard's border contrast threshold (0: off).

    Args:
        value: The threshold.
        name: What the error calls it (a field, or a command-line flag).

    Raises:
        ValueError: not a number, not finite, negative or above ``MAX_CONTRAST_GUARD``.
    """
    return _checked(name, value, MAX_CONTRAST_GUARD, "a border contrast of at most {:g}")


#: The values of ``first_pick`` (:mod:`sammed3d.inference.contrast`).
FIRST_PICKS = ("model", "edges")


def check_first_pick(value: object) -> str:
    """``value`` as a first-click pick rule: ``"model"`` (the model's ranking) or ``"edges"``.

    Raises:
        ValueError: anything else.
    """
    return _choice("first_pick", value, FIRST_PICKS)


#: The values of ``later_check`` (:mod:`sammed3d.inference.contrast`).
LATER_CHECKS = ("none", "edges")


def check_later_check(value: object) -> str:
    """``value`` as a later-click check: ``"none"`` or ``"edges"`` (the edge check).

    Raises:
        ValueError: anything else.
    """
    return _choice("later_check", value, LATER_CHECKS)


#: The values of ``click_bounds`` (:mod:`sammed3d.inference.bounds`): off, negative later
#: clicks only, later clicks of both signs.
CLICK_BOUNDS = ("none", "negative", "both")


def check_click_bounds(value: object) -> str:
    """``value`` as a click-bounds setting: ``"none"``, ``"negative"`` or ``"both"``.

    Raises:
        ValueError: anything else.
    """
    return _choice("click_bounds", value, CLICK_BOUNDS)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SAM-Med3D model.

    The first eight fields are those of the published builders; the rest default to the
    released ``vit_b_ori`` values and exist so that small variants can be built. The last
    twelve (``click_maps``, ``hires_channels``, ``first_click_multimask``,
    ``negative_click_similarity``, ``zoom_spacing``, ``refine_boundary``, ``contrast_guard``,
    ``first_pick``, ``later_check``, ``fine_zoom_spacing``, ``rim_edit``, ``click_bounds``)
    are options of our own models; published
    checkpoints always get the published behaviour (``negative_click_similarity`` only acts
    with the first two).
    """

    img_size: int = 128
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_embed_dim: int = 384
    in_chans: int = 1
    mlp_ratio: float = 4.0
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    decoder_attention_downsample_rate: int = 2
    #: Our models only (published: False). Give every click to the network as dense maps too:
    #: a positive and a negative Gaussian channel next to the previous logits in the mask
    #: prompt (and in the high-resolution head). Such models take all clicks at every step.
    click_maps: bool = False
    #: Our models only (published: 0). Width of the high-resolution path (a conv stem on the
    #: input and a refinement head): logits on a ``2 * low_res`` grid (64^3 instead of 32^3).
    hires_channels: int = 0
    #: Our models only (published: False). At an object's first click (no previous logits),
    #: decode the three multimask outputs and keep the one with the highest predicted IoU
    #: x stability score (SAM's answer to an ambiguous click: a click in the white matter is
    #: also a click in the brain). Set by training with ``train.first_click_multimask``; a
    #: behaviour, not an architecture, so it is not compared when weights are matched to a
    #: config.
    first_click_multimask: bool = field(default=False, compare=False)
    #: Our models only (``click_maps`` with a high-res path). Whether the similarity map to the
    #: negative clicks is given to the network (the positive one always is). A negative click
    #: lies in a false positive, a region that looked like the target to the model, so
    #: "suppress what looks like this click" can erase the target itself; a model trained
    #: without it lost masks after corrective clicks as often (docs/default_model.md, segment
    #: 9), so the bundled model keeps it. Off: that channel is zeros. A behaviour of the
    #: weights (no parameter changes shape), so it is not compared when weights are matched.
    negative_click_similarity: bool = field(default=True, compare=False)
    #: Our models only (published: 0, off). Zoom-in at an object's first click: a first mask
    #: that is small (its box at most 55 % of a ROI side at this spacing) is predicted again
    #: in a ROI of this spacing (mm) centred on the click, and the object stays there until
    #: it outgrows that ROI (:mod:`sammed3d.inference.zoom`). Chosen after training, on the
    #: training anatomy (docs/default_model.md); a behaviour, not compared when weights are
    #: matched.
    zoom_spacing: float = field(default=0.0, compare=False)
    #: Our models only (published: 0, off). Boundary refinement: the voxels within this
    #: many mm of a mask's boundary are decided again by intensity, from histograms of the
    #: mask's interior and of a ring around it (:mod:`sammed3d.inference.refine`). An
    #: inference rule chosen after training (docs/default_model.md); not compared when
    #: weights are matched.
    refine_boundary: float = field(default=0.0, compare=False)
    #: Our models only (published: 0, off). Contrast guard: a first-click pick whose
    #: border contrast is below this gives way to the extent with the highest contrast (if at
    #: least twice as high), and a later click that blows the mask up into a mask of low
    #: contrast is not taken (:mod:`sammed3d.inference.contrast`). An inference rule chosen
    #: after training (docs/default_model.md); not compared when weights are matched.
    contrast_guard: float = field(default=0.0, compare=False)
    #: Our models only (published: "model"). Which of a first click's extents the object
    #: gets: the model's own ranking (``"model"``) or the one whose border follows the
    #: strongest intensity edge (``"edges"``, :func:`sammed3d.inference.contrast.edge_pick`;
    #: the contrast guard's first-click half is then not applied). Only for models trained
    #: with ``first_click_multimask``. An inference rule chosen after training
    #: (docs/default_model.md); not compared when weights are matched.
    first_pick: str = field(default="model", compare=False)
    #: Our models only (published and bundled: "none"). The edge check (``"edges"``,
    #: :func:`sammed3d.inference.contrast.later_click_refused`): a later click whose mask's
    #: edge score falls well below the previous mask's is refused (the mask stays, the click
    #: is not kept). An inference rule tried after training and not bundled
    #: (docs/default_model.md); not compared when weights are matched.
    later_check: str = field(default="none", compare=False)
    #: Our models only (published and bundled: 0, off). A second zoom lattice, finer than
    #: ``zoom_spacing``: a first click's masks in a ROI of this spacing (mm) centred on the
    #: click are offered among its extents, so the edge pick can take them
    #: (:meth:`sammed3d.inference.SamMed3DPredictor.first_click_extents`). An inference
    #: rule tried after training and not bundled (slower first clicks; docs/default_model.md);
    #: not compared when weights are matched.
    fine_zoom_spacing: float = field(default=0.0, compare=False)
    #: Our models only (published: 0, off). The rim edit: a positive later click that
    #: touches the mask of a small object (one on a zoom lattice) changes its low-res logits
    #: only within this many mm of the click, where the new logits may raise the old ones
    #: (:meth:`sammed3d.inference.SamMed3DPredictor.rim_edit_tile`). An inference rule chosen
    #: after training (docs/default_model.md); not compared when weights are matched.
    rim_edit: float = field(default=0.0, compare=False)
    #: Our models only (published: "none"). Click bounds: a negative later click never adds
    #: voxels to an object's mask (``"negative"``), and with ``"both"`` a positive one never
    #: removes any either (:mod:`sammed3d.inference.bounds`). An inference rule chosen after
    #: training (docs/default_model.md); not compared when weights are matched.
    click_bounds: str = field(default="none", compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "encoder_global_attn_indexes",
            tuple(int(i) for i in self.encoder_global_attn_indexes),
        )
        self.validate()

    @property
    def mask_prompt_channels(self) -> int:
        """Channels of the mask prompt: previous logits (+ positive/negative click maps, + with a
        high-res path the similarity to the positive/negative clicks)."""
        if not self.click_maps:
            return 1
        return 5 if self.hires_channels else 3

    @property
    def grid_size(self) -> int:
        """Edge of the token grid (8 for the released model)."""
        return self.img_size // self.patch_size

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending values."""
        positive = [
            "img_size", "patch_size", "encoder_embed_dim", "encoder_depth", "encoder_num_heads",
            "prompt_embed_dim", "in_chans", "mask_in_chans", "iou_head_depth",
            "iou_head_hidden_dim", "decoder_depth", "decoder_num_heads", "decoder_mlp_dim",
            "decoder_attention_downsample_rate",
        ]  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} must divide img_size={self.img_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise ValueError(
                f"encoder_embed_dim={self.encoder_embed_dim} must be divisible by "
                f"encoder_num_heads={self.encoder_num_heads}"
            )
        if self.prompt_embed_dim % 3:
            raise ValueError(
                f"prompt_embed_dim={self.prompt_embed_dim} must be divisible by 3 "
                "(the point encoding is [sin, cos, sin] of prompt_embed_dim/3 features)"
            )
        if self.prompt_embed_dim % 8:
            raise ValueError(
                f"prompt_embed_dim={self.prompt_embed_dim} must be divisible by 8 "
                "(the decoder upscales to prompt_embed_dim/4 and /8 channels)"
            )
        internal = self.prompt_embed_dim // self.decoder_attention_downsample_rate
        if self.prompt_embed_dim % self.decoder_num_heads or internal % self.decoder_num_heads:
            raise ValueError(
                f"prompt_embed_dim={self.prompt_embed_dim} and its cross-attention width "
                f"{internal} must be divisible by decoder_num_heads={self.decoder_num_heads}"
            )
        if not isinstance(self.click_maps, bool):
            raise ValueError(f"click_maps must be true or false, got {self.click_maps!r}")
        if (
            not isinstance(self.hires_channels, int)
            or isinstance(self.hires_channels, bool)
            or self.hires_channels < 0
        ):
            raise ValueError(f"hires_channels must be an integer >= 0, got {self.hires_channels!r}")
        if not isinstance(self.first_click_multimask, bool):
            raise ValueError(
                f"first_click_multimask must be true or false, got {self.first_click_multimask!r}"
            )
        if not isinstance(self.negative_click_similarity, bool):
            raise ValueError(
                "negative_click_similarity must be true or false, "
                f"got {self.negative_click_similarity!r}"
            )
        for name in ("zoom_spacing", "fine_zoom_spacing"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be 0 (off) or a spacing in mm, got {value!r}")
        check_refine_boundary(self.refine_boundary)
        check_contrast_guard(self.contrast_guard)
        check_first_pick(self.first_pick)
        check_later_check(self.later_check)
        check_rim_edit(self.rim_edit)
        check_click_bounds(self.click_bounds)
        if self.first_click_multimask and self.num_multimask_outputs < 1:
            raise ValueError("first_click_multimask needs num_multimask_outputs >= 1, got 0")
        if self.mask_in_chans % 4:
            raise ValueError(f"mask_in_chans must be divisible by 4, got {self.mask_in_chans}")
        if self.window_size < 0:
            raise ValueError(f"window_size must be >= 0, got {self.window_size}")
        if self.num_multimask_outputs < 0:
            raise ValueError(
                f"num_multimask_outputs must be >= 0, got {self.num_multimask_outputs}"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ValueError(
                f"encoder_global_attn_indexes {bad} out of range for encoder_depth="
                f"{self.encoder_depth}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/YAML/weights_only-safe)."""
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


#: The :class:`ModelConfig` fields that are behaviours: they change no tensor shape and take
#: no part in comparing architectures (``compare=False``, ``extra`` aside), such as
#: ``first_click_multimask`` and the inference rules (``zoom_spacing``, ``first_pick``, ...).
BEHAVIOUR_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if not f.compare and f.name != "extra"
)
