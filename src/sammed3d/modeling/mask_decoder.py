"""Mask decoder of SAM-Med3D (``MaskDecoder3D``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sammed3d.modeling.common import MLP, LayerNorm3d
from sammed3d.modeling.hires import HiResHead
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
        hires_channels: Our models only: width of a :class:`~sammed3d.modeling.hires.HiResHead`
            (0, the published decoder, has none).
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
        hires_channels: int = 0,
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
        self.hires_head = HiResHead(transformer_dim, hires_channels) if hires_channels else None

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
        hires_features: torch.Tensor | None = None,
        hires_maps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks (the published signature, plus the inputs of the high-res head).

        Args:
            image_embeddings: ``(B or 1, C, g, g, g)`` from the image encoder.
            image_pe: ``(1, C, g, g, g)`` dense positional encoding.
            sparse_prompt_embeddings: ``(B, T, C)``.
            dense_prompt_embeddings: ``(B, C, g, g, g)``.
            multimask_output: False -> mask 0 only; True -> masks 1..3.
            hires_features: Models with a high-res head: ``(B or 1, 8g, 8g, 8g, C_h)`` stem
                features (channels last) (:class:`~sammed3d.modeling.hires.HiResStem`).
            hires_maps: Models with a high-res head: ``(B, 3, 8g, 8g, 8g)`` previous logits
                and click maps.

        Returns:
            logits ``(B, 1 or 3, 4g, 4g, 4g)`` (``8g`` with a high-res head) and IoU
            predictions ``(B, 1 or 3)``.

        Raises:
            ValueError: a model with a high-res head called without its inputs.
        """
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        if self.hires_head is not None and (hires_features is None or hires_maps is None):
            raise ValueError(
                "this decoder has a high-resolution head: pass hires_features and hires_maps "
                "(Sam3D.encode / Sam3D.decode do)"
            )
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            mask_slice=mask_slice,
            hires_features=hires_features,
            hires_maps=hires_maps,
        )
        return masks, iou_pred[:, mask_slice]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        mask_slice: slice | None = None,
        hires_features: torch.Tensor | None = None,
        hires_maps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (all ``num_mask_tokens``, or only ``mask_slice``) and all IoU predictions."""
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

        token_ids = range(self.num_mask_tokens)[mask_slice or slice(None)]
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in token_ids],
            dim=1,
        )  # (B, T, C/8)
        masks = self._upscale_and_project(src, hyper_in, (x, y, z))  # (B, T, 4x, 4y, 4z)
        if self.hires_head is not None and hires_features is not None and hires_maps is not None:
            masks = self.hires_head(
                masks, mask_tokens_out[:, list(token_ids)], hires_features, hires_maps
            )
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred

    def _upscale_and_project(
        self, keys: torch.Tensor, hyper_in: torch.Tensor, grid: tuple[int, int, int]
    ) -> torch.Tensor:
        """``masks = hyper_in @ output_upscaling(keys)``, computed without big reshuffles.

        Same arithmetic as the published path (ConvTranspose3d k2 s2, LayerNorm3d, GELU,
        ConvTranspose3d k2 s2, GELU, then the hypernetwork product), but each kernel-2 stride-2
        transposed convolution is one matmul whose outputs stay in "block" order (every input
        voxel's 2x2x2 children next to each other). The LayerNorm, the GELUs and the product
        act per voxel, so the order does not matter to them; only the final ``T`` mask channels
        are shuffled back into spatial order.

        Args:
            keys: ``(B, g^3, C)`` image tokens from the transformer.
            hyper_in: ``(B, T, C/8)``.
            grid: ``(x, y, z)`` token grid.

        Returns:
            ``(B, T, 4x, 4y, 4z)`` mask logits.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, n, _ = keys.shape
        gx, gy, gz = grid
        c1, c2 = up1.out_channels, up2.out_channels
        # voxel order after each layer: (x, y, z, a1, b1, c1[, a2, b2, c2]), channels last
        h = _conv_transpose_k2s2_blocks(keys, up1).reshape(b, n * 8, c1)
        h = act1(F.layer_norm(h, (c1,), norm.weight, norm.bias, norm.eps))
        h = act2(_conv_transpose_k2s2_blocks(h, up2)).reshape(b, n * 64, c2)
        masks = h @ hyper_in.to(h.dtype).transpose(1, 2)  # (B, n*64, T)
        t = masks.shape[-1]
        masks = masks.reshape(b, gx, gy, gz, 2, 2, 2, 2, 2, 2, t)
        # -> (T, x a1 a2, y b1 b2, z c1 c2)
        masks = masks.permute(0, 10, 1, 4, 7, 2, 5, 8, 3, 6, 9)
        return masks.reshape(b, t, 4 * gx, 4 * gy, 4 * gz)


def _conv_transpose_k2s2_blocks(x: torch.Tensor, conv: nn.ConvTranspose3d) -> torch.Tensor:
    """Kernel-2 stride-2 ConvTranspose3d on voxels ``(B, N, Cin)`` -> ``(B, N, 8, Cout)``.

    Output ``[b, n, 4a + 2b + c, :]`` is child ``(a, b, c)`` of input voxel ``n``.
    """
    if tuple(conv.kernel_size) != (2, 2, 2) or tuple(conv.stride) != (2, 2, 2):
        raise ValueError("expected a kernel-2, stride-2 ConvTranspose3d")
    b, n, cin = x.shape
    cout = conv.out_channels
    # weight (Cin, Cout, 2, 2, 2) -> (8 * Cout, Cin) with rows ordered (child, cout)
    weight = conv.weight.reshape(cin, cout, 8).permute(2, 1, 0).reshape(8 * cout, cin)
    bias = None if conv.bias is None else conv.bias.repeat(8).to(x.dtype)
    return F.linear(x, weight.to(x.dtype), bias).view(b, n, 8, cout)
