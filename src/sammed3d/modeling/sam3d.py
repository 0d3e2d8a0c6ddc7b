"""``Sam3D``: the composed SAM-Med3D model."""

from __future__ import annotations

import torch
from torch import nn

from sammed3d.modeling.common import upsample_trilinear
from sammed3d.modeling.image_encoder import ImageEncoderViT3D
from sammed3d.modeling.mask_decoder import MaskDecoder3D
from sammed3d.modeling.prompt_encoder import PromptEncoder3D


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
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
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
        """Spatial size of the low-res logits (and of the mask prompt)."""
        s = self.prompt_encoder.mask_input_size
        return (s[0], s[1], s[2])

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder in one call.

        Args:
            image_embeddings: ``(B, C, g, g, g)``.
            point_coords: ``(B, N, 3)`` in tensor-axis order of the encoder input, or None.
            point_labels: ``(B, N)`` (1 positive, 0 negative), or None.
            mask_input: previous low-res logits ``(B, 1, 4g, 4g, 4g)`` or None.

        Returns:
            low-res logits ``(B, 1 or 3, 4g, 4g, 4g)`` and IoU predictions.
        """
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given together with point_coords")
            points = (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=mask_input)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def upsample_logits(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """Trilinear (align_corners=False) upsampling of low-res logits to the input size."""
        return upsample_trilinear(low_res_logits, (self.img_size,) * 3)
