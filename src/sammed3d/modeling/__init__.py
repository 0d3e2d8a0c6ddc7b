"""The SAM-Med3D network: image encoder, prompt encoder, mask decoder and their composition.

Module attribute names reproduce the published state-dict keys exactly, so published
checkpoints load strictly (see ``tests/test_build.py``).
"""

from sammed3d.modeling.common import MLP, LayerNorm3d, MLPBlock
from sammed3d.modeling.hires import HiResHead, HiResStem
from sammed3d.modeling.image_encoder import Block3D, ImageEncoderViT3D, PatchEmbed3D
from sammed3d.modeling.mask_decoder import MaskDecoder3D
from sammed3d.modeling.prompt_encoder import PositionEmbeddingRandom3D, PromptEncoder3D
from sammed3d.modeling.prompt_maps import draw_click_maps
from sammed3d.modeling.sam3d import (
    ImageEmbedding,
    Sam3D,
    select_by_iou,
    select_first_click_mask,
    stability_score,
)
from sammed3d.modeling.transformer import TwoWayAttentionBlock3D, TwoWayTransformer3D

__all__ = [
    "MLP",
    "Block3D",
    "HiResHead",
    "HiResStem",
    "ImageEmbedding",
    "ImageEncoderViT3D",
    "LayerNorm3d",
    "MLPBlock",
    "MaskDecoder3D",
    "PatchEmbed3D",
    "PositionEmbeddingRandom3D",
    "PromptEncoder3D",
    "Sam3D",
    "select_by_iou",
    "select_first_click_mask",
    "stability_score",
    "TwoWayAttentionBlock3D",
    "TwoWayTransformer3D",
    "draw_click_maps",
]
