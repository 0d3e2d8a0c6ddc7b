"""A task-specific multi-class segmenter on the SAM-Med3D image encoder (UNETR-style decoder).

The network is the published ``ImageEncoderViT3D`` (any registered size, unchanged) plus the
decoder of UNETR (Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image
Segmentation", WACV 2022) assembled from MONAI's blocks:

* skip features are the token grids after encoder blocks ``L/4``, ``L/2`` and ``3L/4``
  (0-based; for 12 blocks 3, 6 and 9 as in MONAI's ``UNETR``), collected with forward hooks
  on ``image_encoder.blocks`` (the encoder's own forward is not changed);
* the bottleneck is the encoder's output (its neck, ``prompt_embed_dim`` channels), so every
  pre-trained weight of the encoder is used;
* ``UnetrPrUpBlock`` projects the skip grids (``S/16``) up to ``S/2``, ``S/4`` and ``S/8``,
  ``UnetrBasicBlock`` encodes the input at full resolution, four ``UnetrUpBlock`` stages
  decode, and ``UnetOutBlock`` gives ``num_classes + 1`` logits (channel 0 = background).

Shapes: input ``(B, in_chans, S, S, S)`` with ``S = encoder.img_size`` (the encoder's
position embedding fixes it; 128 for the released models), output ``(B, N + 1, S, S, S)``.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from sammed3d.config import ModelConfig
from sammed3d.modeling.image_encoder import AttentionImpl

#: Encoder fields a SAM-Med3D checkpoint must share with the task model's encoder.
ENCODER_FIELDS = (
    "img_size",
    "patch_size",
    "in_chans",
    "encoder_embed_dim",
    "encoder_depth",
    "encoder_num_heads",
    "encoder_global_attn_indexes",
    "window_size",
    "prompt_embed_dim",
    "mlp_ratio",
)


def default_skip_blocks(depth: int) -> tuple[int, int, int]:
    """Encoder blocks whose outputs feed the decoder: ``k * depth // 4`` for k = 1, 2, 3
    (at most ``depth - 1``); ``(3, 6, 9)`` for 12 blocks, as MONAI's UNETR."""
    if depth < 1:
        raise ValueError(f"encoder depth must be >= 1, got {depth}")
    return tuple(min(depth - 1, k * depth // 4) for k in (1, 2, 3))  # type: ignore[return-value]


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to rebuild and use a task model (stored in its checkpoint).

    Attributes:
        encoder: Architecture of the SAM-Med3D model whose image encoder is the backbone.
        encoder_name: Its registry name (``sam_med3d_turbo``, ``sam_med3d_demo``, ...).
        classes: Class names; class ``i`` (0-based) is output label ``i + 1``.
        decoder_features: UNETR ``feature_size``.
        skip_blocks: Encoder blocks feeding the decoder (default :func:`default_skip_blocks`).
        spacing: Voxel size (mm) the model works at (images are resampled to it).
        ct_clamp: Intensity window applied to CT images before normalisation, or None.
        modality: Modality of the training images (``CT``, ``MR``, ...; ``mixed`` or
            ``unknown``): the default at inference.
        sw_overlap: Overlap of the sliding windows at inference.
        padding: How voxels beyond the image are filled, as in training
            (:data:`sammed3d.task.preprocess.PADDING_MODES`; a checkpoint that does not record
            it was trained with ``zero``).
        encoder_origin: Where the encoder's initial weights came from: ``{"init": "scratch"}``
            or ``{"init": "checkpoint", "checkpoint": <argument>, "file": <path>, "sha256":
            <hex>}``, plus ``frozen`` and ``layer_decay``.
    """

    encoder: ModelConfig
    classes: tuple[str, ...]
    encoder_name: str = ""
    decoder_features: int = 16
    skip_blocks: tuple[int, ...] = ()
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    ct_clamp: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str = "unknown"
    sw_overlap: float = 0.5
    padding: str = "minimum"
    encoder_origin: dict[str, Any] = field(default_factory=lambda: {"init": "scratch"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not self.skip_blocks:
            object.__setattr__(self, "skip_blocks", default_skip_blocks(self.encoder.encoder_depth))
        object.__setattr__(self, "skip_blocks", tuple(int(b) for b in self.skip_blocks))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.ct_clamp is not None:
            object.__setattr__(self, "ct_clamp", tuple(float(v) for v in self.ct_clamp))
        self.validate()

    @property
    def num_classes(self) -> int:
        """Foreground classes (the network outputs one more channel, the background)."""
        return len(self.classes)

    @property
    def patch_size(self) -> int:
        """Edge of the cubic patches the network takes (the encoder's ``img_size``)."""
        return self.encoder.img_size

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending value."""
        if not self.classes:
            raise ValueError("a task model needs at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be distinct, got {list(self.classes)}")
        if self.encoder.patch_size != 16:
            raise ValueError(
                f"the UNETR decoder needs an encoder with 16^3 patches (4 upsampling stages), "
                f"got patch_size={self.encoder.patch_size}"
            )
        if self.decoder_features < 2 or self.decoder_features % 2:
            raise ValueError(
                f"decoder_features must be an even number >= 2, got {self.decoder_features}"
            )
        depth = self.encoder.encoder_depth
        if len(self.skip_blocks) != 3 or not all(0 <= b < depth for b in self.skip_blocks):
            raise ValueError(
                f"skip_blocks must be 3 block indexes in [0, {depth - 1}], got {self.skip_blocks}"
            )
        if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be 3 positive values, got {self.spacing}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError(f"sw_overlap must be in [0, 1), got {self.sw_overlap}")
        from sammed3d.task.preprocess import PADDING_MODES

        if self.padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {list(PADDING_MODES)}, got {self.padding!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (``torch.load(weights_only=True)``-safe, JSON-able)."""
        out = dataclasses.asdict(self)
        out["encoder"] = self.encoder.to_dict()
        out["classes"] = list(self.classes)
        out["skip_blocks"] = list(self.skip_blocks)
        out["spacing"] = list(self.spacing)
        out["ct_clamp"] = None if self.ct_clamp is None else list(self.ct_clamp)
        out["encoder_origin"] = dict(self.encoder_origin)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"task spec must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown task spec keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        values.setdefault("padding", "zero")  # checkpoints from before the rule was recorded
        values["encoder"] = ModelConfig.from_dict(dict(values["encoder"]))
        if values.get("ct_clamp") is not None:
            values["ct_clamp"] = tuple(values["ct_clamp"])
        return cls(**values)


class UnetrDecoder(nn.Module):
    """The UNETR decoder from MONAI blocks (instance norm, residual blocks, as MONAI's UNETR).

    Args:
        in_chans: Image channels (the full-resolution branch reads the image).
        hidden: Token width of the skip grids (the encoder's ``embed_dim``).
        bottleneck: Channels of the deepest feature (the encoder's output, ``out_chans``).
        features: ``feature_size`` (channels at full resolution; 2x, 4x, 8x deeper).
        out_channels: Output channels (classes + background).
    """

    def __init__(
        self, in_chans: int, hidden: int, bottleneck: int, features: int, out_channels: int
    ) -> None:
        super().__init__()
        from monai.networks.blocks import (
            UnetOutBlock,
            UnetrBasicBlock,
            UnetrPrUpBlock,
            UnetrUpBlock,
        )

        common: dict[str, Any] = {"spatial_dims": 3, "norm_name": "instance", "res_block": True}
        f = features
        self.encoder1 = UnetrBasicBlock(
            in_channels=in_chans, out_channels=f, kernel_size=3, stride=1, **common
        )
        # token grids (S/16) -> S/2, S/4, S/8: 3, 2 and 1 transposed convolutions
        self.encoder2, self.encoder3, self.encoder4 = (
            UnetrPrUpBlock(
                in_channels=hidden,
                out_channels=f * width,
                num_layer=extra,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                conv_block=True,
                **common,
            )
            for width, extra in ((2, 2), (4, 1), (8, 0))
        )
        self.decoder5 = UnetrUpBlock(
            in_channels=bottleneck,
            out_channels=f * 8,
            kernel_size=3,
            upsample_kernel_size=2,
            **common,
        )
        self.decoder4, self.decoder3, self.decoder2 = (
            UnetrUpBlock(
                in_channels=f * w_in,
                out_channels=f * w_out,
                kernel_size=3,
                upsample_kernel_size=2,
                **common,
            )
            for w_in, w_out in ((8, 4), (4, 2), (2, 1))
        )
        self.out = UnetOutBlock(spatial_dims=3, in_channels=f, out_channels=out_channels)

    def forward(
        self, image: torch.Tensor, skips: list[torch.Tensor], bottleneck: torch.Tensor
    ) -> torch.Tensor:
        """``image`` ``(B, C, S, S, S)``, three skip grids ``(B, hidden, g, g, g)`` (shallow
        first) and ``bottleneck`` ``(B, out_chans, g, g, g)`` -> logits ``(B, K, S, S, S)``."""
        enc1 = self.encoder1(image)
        enc2 = self.encoder2(skips[0])
        enc3 = self.encoder3(skips[1])
        enc4 = self.encoder4(skips[2])
        x = self.decoder5(bottleneck, enc4)
        x = self.decoder4(x, enc3)
        x = self.decoder3(x, enc2)
        x = self.decoder2(x, enc1)
        return self.out(x)


class TaskModel(nn.Module):
    """SAM-Med3D image encoder + UNETR decoder: dense multi-class logits.

    Args:
        spec: Architecture, classes and provenance (:class:`TaskSpec`).
        attn_impl: Encoder attention implementation (``"fast"``, exact, or ``"reference"``).

    Attributes:
        freeze_encoder: Run the encoder without autograd (set for a frozen backbone).

    Example:
        >>> model = TaskModel(TaskSpec(get_config("sam_med3d_tiny"), ("liver", "tumour")))
        >>> model(torch.randn(2, 1, 64, 64, 64)).shape
        torch.Size([2, 3, 64, 64, 64])
    """

    def __init__(self, spec: TaskSpec, attn_impl: AttentionImpl = "fast") -> None:
        super().__init__()
        from sammed3d.build import build_image_encoder

        self.spec = spec
        cfg = spec.encoder
        self.image_encoder = build_image_encoder(cfg, attn_impl)
        self.decoder = UnetrDecoder(
            cfg.in_chans,
            cfg.encoder_embed_dim,
            cfg.prompt_embed_dim,
            spec.decoder_features,
            spec.num_classes + 1,
        )
        self.freeze_encoder = False
        self._capturing = False
        self._captured: dict[int, torch.Tensor] = {}
        for index in sorted(set(spec.skip_blocks)):
            self.image_encoder.blocks[index].register_forward_hook(partial(self._capture, index))

    def _capture(self, index: int, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self._capturing:  # only inside forward(): the encoder alone keeps nothing
            self._captured[index] = output

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, S, S, S)`` normalised patches -> ``(B, N + 1, S, S, S)`` logits.

        Raises:
            ValueError: a shape other than ``(B, in_chans, S, S, S)``.
        """
        s, c = self.patch_size, self.spec.encoder.in_chans
        if image.ndim != 5 or image.shape[1] != c or tuple(image.shape[2:]) != (s, s, s):
            raise ValueError(
                f"expected patches of shape (B, {c}, {s}, {s}, {s}), got {tuple(image.shape)}"
            )
        grad = torch.no_grad() if self.freeze_encoder else nullcontext()
        self._captured, self._capturing = {}, True
        try:
            with grad:
                bottleneck = self.image_encoder(image)
            skips = [self._captured[i].permute(0, 4, 1, 2, 3) for i in self.spec.skip_blocks]
        finally:
            self._captured, self._capturing = {}, False
        return self.decoder(image, skips, bottleneck)


__all__ = ["ENCODER_FIELDS", "TaskModel", "TaskSpec", "UnetrDecoder", "default_skip_blocks"]
