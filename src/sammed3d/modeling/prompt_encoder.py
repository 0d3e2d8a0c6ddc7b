"""Prompt encoder of SAM-Med3D (``PromptEncoder3D``): points and mask prompts -> embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from sammed3d.modeling.common import LayerNorm3d


class PositionEmbeddingRandom3D(nn.Module):
    """Random Fourier position encoding of 3-D coordinates in ``[0, 1]^3``.

    ``u = (2c - 1) @ G`` with ``G`` of shape ``(3, num_pos_feats)`` (persistent, loaded from the
    checkpoint), ``a = 2 pi u``, output ``[sin a, cos a, sin a]`` (``3 * num_pos_feats``
    channels: the third block repeats the first, as in the published model).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((3, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` coordinates in ``[0, 1]`` -> ``(..., 3 * num_pos_feats)``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix.to(coords.dtype)
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords), torch.sin(coords)], dim=-1)

    def forward(self, size: tuple[int, int, int]) -> torch.Tensor:
        """Dense encoding of a ``size`` grid: ``(C, s0, s1, s2)``.

        Cell ``(i0, i1, i2)`` is encoded at ``((i1+.5)/s1, (i0+.5)/s0, (i2+.5)/s2)``: the first
        two components are swapped relative to the tensor axes (inherited from 2-D SAM's x/y).
        Together with :meth:`forward_with_coords` this is QUIRK C: a point at voxel ``(a, b, c)``
        matches grid cell ``(b//p, a//p, c//p)``, not ``(a//p, b//p, c//p)``. The released
        weights were trained so; do not "fix" either side.
        """
        s0, s1, s2 = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((s0, s1, s2), device=device, dtype=torch.float32)
        e0 = (grid.cumsum(dim=0) - 0.5) / s0
        e1 = (grid.cumsum(dim=1) - 0.5) / s1
        e2 = (grid.cumsum(dim=2) - 0.5) / s2
        pe = self._pe_encoding(torch.stack([e1, e0, e2], dim=-1))
        return pe.permute(3, 0, 1, 2)  # (C, s0, s1, s2)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int, int]
    ) -> torch.Tensor:
        """Encode points ``(B, N, 3)`` given in input-voxel units (not normalised)."""
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[0]
        coords[:, :, 1] = coords[:, :, 1] / image_size[1]
        coords[:, :, 2] = coords[:, :, 2] / image_size[2]
        return self._pe_encoding(coords.to(torch.float))  # (B, N, C)


class PromptEncoder3D(nn.Module):
    """Embeds point and mask prompts for :class:`~sammed3d.modeling.MaskDecoder3D`.

    Args:
        embed_dim: Prompt embedding width (divisible by 3).
        image_embedding_size: Token grid of the image embedding, e.g. ``(8, 8, 8)``.
        input_image_size: Encoder input size, e.g. ``(128, 128, 128)``.
        mask_in_chans: Hidden channels of the mask downscaling network.
        mask_prompt_channels: Input channels of the mask prompt (published 1: the previous
            logits; 3 for models with ``click_maps``: previous logits, positive and negative
            click maps).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int, int],
        input_image_size: tuple[int, int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
        mask_prompt_channels: int = 1,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        self.num_point_embeddings = 2  # negative, positive (no box corners on main)
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = tuple(4 * s for s in image_embedding_size)
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(mask_prompt_channels, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            activation(),
            nn.Conv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            activation(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self.mask_prompt_channels = mask_prompt_channels

    def get_dense_pe(self) -> torch.Tensor:
        """Dense positional encoding of the embedding grid: ``(1, C, g, g, g)``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Points ``(B, N, 3)`` in tensor-axis order of the input crop, labels ``(B, N)``.

        Labels: 1 positive, 0 negative, -1 padding. A padding point is appended when ``pad``.
        """
        points = points + 0.5  # shift to the centre of the voxel
        if pad:
            padding_point = torch.zeros((points.shape[0], 1, 3), device=points.device)
            padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, padding_point.to(points.dtype)], dim=1)
            labels = torch.cat([labels, padding_label.to(labels.dtype)], dim=1)
        point_embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        point_embedding = torch.where(
            (labels == -1)[..., None], torch.zeros_like(point_embedding), point_embedding
        )
        point_embedding = (
            point_embedding + (labels == -1)[..., None] * self.not_a_point_embed.weight
        )
        point_embedding = (
            point_embedding + (labels == 0)[..., None] * self.point_embeddings[0].weight
        )
        point_embedding = (
            point_embedding + (labels == 1)[..., None] * self.point_embeddings[1].weight
        )
        return point_embedding

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask prompt ``(B, mask_prompt_channels, 4g, 4g, 4g)`` -> ``(B, C, g, g, g)``."""
        if masks.ndim != 5 or masks.shape[1] != self.mask_prompt_channels:
            raise ValueError(
                f"mask prompt must be (B, {self.mask_prompt_channels}, "
                f"{', '.join(map(str, self.mask_input_size))}), got {tuple(masks.shape)}"
            )
        return self.mask_downscaling(masks)

    @staticmethod
    def _get_batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def _get_device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts (the published signature).

        Args:
            points: ``(coords (B, N, 3), labels (B, N))`` or None.
            boxes: must be None; the released model has no box embeddings.
            masks: previous low-res logits ``(B, 1, 4g, 4g, 4g)`` or None.

        Returns:
            sparse ``(B, N + 1, C)`` (``(B, 0, C)`` without points) and dense ``(B, C, g, g, g)``.
        """
        if boxes is not None:
            raise NotImplementedError(
                "box prompts are not supported: the released SAM-Med3D weights have no box "
                "embeddings (pass boxes=None)"
            )
        bs = self._get_batch_size(points, boxes, masks)
        sparse = torch.empty((bs, 0, self.embed_dim), device=self._get_device())
        if points is not None:
            coords, labels = points
            point_embeddings = self._embed_points(coords, labels, pad=boxes is None)
            sparse = torch.cat([sparse.to(point_embeddings.dtype), point_embeddings], dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(
                bs, -1, *self.image_embedding_size
            )
        return sparse, dense
