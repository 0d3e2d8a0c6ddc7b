"""``Sam3D``: the composed SAM-Med3D model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sammed3d.modeling.common import upsample_trilinear
from sammed3d.modeling.hires import HiResStem, click_similarity
from sammed3d.modeling.image_encoder import ImageEncoderViT3D
from sammed3d.modeling.mask_decoder import MaskDecoder3D
from sammed3d.modeling.prompt_encoder import PromptEncoder3D
from sammed3d.modeling.prompt_maps import draw_click_maps


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """What the image path computes once per crop (:meth:`Sam3D.encode`).

    Args:
        tokens: ``(B, C, g, g, g)`` ViT embedding (what ``image_encoder(x)`` returns).
        hires: ``(B, 8g, 8g, 8g, C_h)`` stem features (channels last) of models with a high-res
            path, else None.
        similarity_maps: Filled by :meth:`Sam3D.decode` outside autograd for one image:
            each clicked cell's similarity map (:func:`~sammed3d.modeling.hires.click_similarity`),
            so later clicks on this embedding reuse them.
    """

    tokens: torch.Tensor
    hires: torch.Tensor | None = None
    similarity_maps: dict[tuple[int, int, int], torch.Tensor] = field(
        default_factory=dict, repr=False
    )

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    def repeat_interleave(self, repeats: int) -> ImageEmbedding:
        """Each sample ``repeats`` times in a row (several prompts per image)."""
        hires = None if self.hires is None else self.hires.repeat_interleave(repeats, dim=0)
        return ImageEmbedding(self.tokens.repeat_interleave(repeats, dim=0), hires)

    def to(self, device: torch.device | str) -> ImageEmbedding:
        hires = None if self.hires is None else self.hires.to(device)
        return ImageEmbedding(self.tokens.to(device), hires)


class Sam3D(nn.Module):
    """Image encoder + prompt encoder + mask decoder.

    As in the published pipelines, call the three parts directly (or the helpers below);
    the published ``Sam3D.forward`` was a 2-D leftover that no pipeline used, so there is no
    ``forward`` here.

    Example:
        >>> model = build_model("sam_med3d_tiny")
        >>> emb = model.image_encoder(image)  # (1, C, g, g, g)
        >>> sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=prev)
        >>> logits, iou = model.mask_decoder(
        ...     image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
        ...     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        ...     multimask_output=False)
    """

    mask_threshold: float = 0.0

    def __init__(
        self,
        image_encoder: ImageEncoderViT3D,
        prompt_encoder: PromptEncoder3D,
        mask_decoder: MaskDecoder3D,
        pixel_mean: tuple[float, ...] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, ...] = (58.395, 57.12, 57.375),
        hires_encoder: HiResStem | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        if (hires_encoder is None) != (mask_decoder.hires_head is None):
            raise ValueError("a high-res stem and a high-res decoder head go together")
        self.hires_encoder = hires_encoder
        #: Clicks are also given as dense maps (``ModelConfig.click_maps``).
        self.click_maps = prompt_encoder.mask_prompt_channels > 1
        # Non-persistent leftovers of the published model; unused by every real pipeline.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.point_embeddings[0].weight.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def low_res_size(self) -> tuple[int, int, int]:
        """Spatial size of the logits :meth:`decode` returns (and takes back as ``mask_input``).

        ``4g`` per axis (32 for a 128 input) for the published decoder, ``8g`` with a high-res
        path.
        """
        s = self.prompt_encoder.mask_input_size
        f = 2 if self.hires_encoder is not None else 1
        return (f * s[0], f * s[1], f * s[2])

    @property
    def first_click_multimask(self) -> bool:
        """Whether an object's first click is decoded with the multimask outputs, keeping one
        (:func:`select_first_click_mask`; ``ModelConfig.first_click_multimask``; our models
        only, False for published ones)."""
        cfg = getattr(self, "config", None)
        return bool(cfg is not None and cfg.first_click_multimask)

    @property
    def negative_click_similarity(self) -> bool:
        """Whether the similarity map to the negative clicks reaches the network
        (``ModelConfig.negative_click_similarity``; True unless a model was trained without)."""
        cfg = getattr(self, "config", None)
        return bool(cfg is None or cfg.negative_click_similarity)

    @property
    def accumulates_clicks(self) -> bool:
        """Whether the model expects every click of an object at each step (click-map models)
        rather than the published "newest click + previous logits"."""
        return self.click_maps

    def encode(self, image: torch.Tensor) -> ImageEmbedding:
        """Run the image path once: ``(B, 1, S, S, S)`` normalised crop -> embedding."""
        tokens = self.image_encoder(image)
        hires = self.hires_encoder(image) if self.hires_encoder is not None else None
        return ImageEmbedding(tokens, hires)

    def decode(
        self,
        image_embeddings: ImageEmbedding | torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder in one call.

        For published models this is exactly the published call sequence. Models with
        ``click_maps`` also draw the clicks into the mask prompt (with a high-res path also
        the appearance similarity to the clicked voxels,
        :func:`~sammed3d.modeling.hires.click_similarity`); models with a high-res path refine
        the logits on the ``8g`` grid.

        Args:
            image_embeddings: :meth:`encode` output, or the ``(B, C, g, g, g)`` tensor of
                ``image_encoder`` (models without a high-res path).
            point_coords: ``(B, N, 3)`` in tensor-axis order of the encoder input, or None.
            point_labels: ``(B, N)`` (1 positive, 0 negative), or None.
            mask_input: previous logits ``(B, 1, *low_res_size)`` or None (zeros).

        Returns:
            logits ``(B, 1 or 3, *low_res_size)`` and IoU predictions.

        Raises:
            ValueError: a bare tensor for a model with a high-res path; mismatched shapes.
        """
        emb = (
            image_embeddings
            if isinstance(image_embeddings, ImageEmbedding)
            else ImageEmbedding(image_embeddings)
        )
        if self.hires_encoder is not None and emb.hires is None:
            raise ValueError("this model has a high-res path: pass the output of model.encode(x)")
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given together with point_coords")
            points = (point_coords, point_labels)
        batch = point_coords.shape[0] if point_coords is not None else emb.batch_size
        if mask_input is not None:
            batch = mask_input.shape[0]
        device = emb.tokens.device
        prev = mask_input
        if (self.click_maps or self.hires_encoder is not None) and prev is None:
            prev = torch.zeros((batch, 1, *self.low_res_size), device=device)
        mask_prompt = prev
        hires_maps = None
        if self.hires_encoder is not None:
            assert prev is not None and emb.hires is not None
            size = self.low_res_size[0]
            if self.click_maps:
                clicks = draw_click_maps(
                    point_coords, point_labels, size, self.img_size, batch, device=device
                )
                similar = click_similarity(
                    emb.hires,
                    point_coords,
                    point_labels,
                    self.img_size,
                    cache=None if torch.is_grad_enabled() else emb.similarity_maps,
                )
                if not self.negative_click_similarity:
                    similar[:, 1] = 0
                extra = torch.cat([clicks, similar.to(clicks.dtype)], dim=1)
            else:
                extra = torch.zeros((batch, 4, size, size, size), device=device)
            hires_maps = torch.cat([torch.tanh(prev / 4.0).to(extra.dtype), extra], dim=1)
            mask_prompt = F.avg_pool3d(prev, kernel_size=2)
            if self.click_maps:
                mask_prompt = torch.cat(
                    [mask_prompt.to(extra.dtype), F.avg_pool3d(extra, kernel_size=2)], dim=1
                )
        elif self.click_maps:
            assert prev is not None
            maps = draw_click_maps(
                point_coords, point_labels, prev.shape[-1], self.img_size, batch, device=device
            )
            mask_prompt = torch.cat([prev.to(maps.dtype), maps], dim=1)
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=mask_prompt)
        return self.mask_decoder(
            image_embeddings=emb.tokens,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            hires_features=emb.hires,
            hires_maps=hires_maps,
        )

    def upsample_logits(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """Trilinear (align_corners=False) upsampling of low-res logits to the input size."""
        return upsample_trilinear(low_res_logits, (self.img_size,) * 3)


def select_by_iou(logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, per sample, the mask with the highest predicted IoU (SAM's choice among the
    multimask outputs).

    Args:
        logits: ``(B, M, *spatial)`` mask logits.
        iou: ``(B, M)`` predicted IoU of each mask.

    Returns:
        ``(B, 1, *spatial)`` logits and ``(B, 1)`` predicted IoU of the chosen masks.

    Raises:
        ValueError: ``iou`` does not have the ``(B, M)`` of ``logits``.
    """
    _check_iou_shape(logits, iou)
    return _take_best(logits, iou, iou)


def _take_best(
    logits: torch.Tensor, iou: torch.Tensor, score: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the mask (and its predicted IoU) with the highest ``score`` ``(B, M)``."""
    best = score.argmax(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)


def _check_iou_shape(logits: torch.Tensor, iou: torch.Tensor) -> None:
    if iou.shape != logits.shape[:2]:
        raise ValueError(f"iou must be (B, M) = {tuple(logits.shape[:2])}, got {tuple(iou.shape)}")


def stability_score(logits: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score: IoU of the masks at logit ``+offset`` and ``-offset``.

    A mask whose border sits on a real edge hardly changes with the threshold (score near 1);
    a hedged, blurry one does (Kirillov et al. 2023, automatic mask generation).

    Args:
        logits: ``(B, M, *spatial)``.
        offset: Logit offset (SAM: 1.0).

    Returns:
        ``(B, M)`` in [0, 1]; 0 for a mask that is empty at ``-offset``.
    """
    inner = (logits > offset).flatten(2).sum(-1).float()
    outer = (logits > -offset).flatten(2).sum(-1).float()
    return torch.where(outer > 0, inner / outer.clamp(min=1.0), torch.zeros_like(outer))


def select_first_click_mask(
    logits: torch.Tensor, iou: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The multimask output a first click gets: highest predicted IoU x stability score.

    Both are SAM's mask-quality measures; their product picked better masks than the IoU
    head alone on generated validation crops (docs/default_model.md). Arguments, result and
    errors as :func:`select_by_iou`.
    """
    _check_iou_shape(logits, iou)
    return _take_best(logits, iou, iou.float().clamp(min=0.0) * stability_score(logits))
