"""Mask decoder of SAM-Med3D (``MaskDecoder3D``)."""

from __future__ import annotations

import torch
from torch import nn

from sammed3d.modeling.common import MLP, LayerNorm3d
from sammed3d.modeling.transformer import TwoWayTransformer3D


class MaskDecoder3D(nn.Module):
    """Predicts low-res mask logits from an image embedding and prompt embeddings.

    Only mask 0 (``multimask_output=False``) was ever trained in the released model; the IoU
    head and hypernetworks 1-3 carry untrained values there.

    Args:
        transformer_dim: Channel width (the prompt embedding dim), divisible by 8.
        num_multimask_outputs: Extra masks for ``multimask_output=True`` (3).
        iou_head_depth / iou_head_hidden_dim: The IoU prediction MLP.
        transformer_depth / transformer_num_heads / transformer_mlp_dim: The two-way transformer.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        transformer_depth: int = 2,
        transformer_num_heads: int = 8,
        transformer_mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer3D(
            depth=transformer_depth,
            embedding_dim=transformer_dim,
            mlp_dim=transformer_mlp_dim,
            num_heads=transformer_num_heads,
            attention_downsample_rate=attention_downsample_rate,
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose3d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks (the published signature).

        Args:
            image_embeddings: ``(B or 1, C, g, g, g)`` from the image encoder.
            image_pe: ``(1, C, g, g, g)`` dense positional encoding.
            sparse_prompt_embeddings: ``(B, T, C)``.
            dense_prompt_embeddings: ``(B, C, g, g, g)``.
            multimask_output: False -> mask 0 only; True -> masks 1..3.

        Returns:
            low-res logits ``(B, 1 or 3, 4g, 4g, 4g)`` and IoU predictions ``(B, 1 or 3)``.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice], iou_pred[:, mask_slice]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks and IoU predictions."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        bs = sparse_prompt_embeddings.shape[0]
        output_tokens = output_tokens.unsqueeze(0).expand(bs, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings.to(output_tokens.dtype)), dim=1)

        if image_embeddings.shape[0] != tokens.shape[0]:
            src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
        else:
            src = image_embeddings
        src = src + dense_prompt_embeddings
        if image_pe.shape[0] != tokens.shape[0]:
            pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        else:
            pos_src = image_pe
        b, c, x, y, z = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, x, y, z)
        upscaled = self.output_upscaling(src)  # (B, C/8, 4g, 4g, 4g)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, num_mask_tokens, C/8)
        b, c, x, y, z = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, x * y * z)).reshape(b, -1, x, y, z)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
