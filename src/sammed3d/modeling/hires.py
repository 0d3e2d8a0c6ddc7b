"""High-resolution output path of our own models (``ModelConfig.hires_channels > 0``).

The published decoder predicts logits on a ``4g``-cell grid (32^3 for a 128^3 input: 6 mm
cells at 1.5 mm), which caps the Dice of small targets. Models with a high-resolution path add

* :class:`HiResStem` (state-dict prefix ``hires_encoder.``): a light convolutional stem on the
  input crop, computed once per image next to the ViT embedding, giving ``C_h`` features on an
  ``8g`` grid (64^3: 3 mm cells);
* :class:`HiResHead` (prefix ``mask_decoder.hires_head.``): per click, the coarse logits,
  the previous logits and the click maps are mixed into the cached stem features, and a
  hypernetwork vector from the mask token projects them to logits on the ``8g`` grid, added to
  the upsampled coarse logits (a residual refinement).

Everything that depends on the clicks is a rank-1 update of the cached features (one channel
vector times one map), so a refinement click stays cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sammed3d.modeling.common import MLP, LayerNorm3d, upsample_trilinear

#: Prior foreground probability that the output bias starts at (small targets in a big crop).
PRIOR_FOREGROUND = 0.01
#: :func:`click_similarity` keeps at most this many clicked cells' maps per image (1 MB each
#: for a 64^3 grid: at most 16 MB beside each cached embedding).
SIMILARITY_MAPS_KEPT = 16
#: Grid cells per chunk of :class:`HiResHead`'s per-cell work outside autograd.
HEAD_CHUNK_CELLS = 65_536
#: The cache key of the squared feature norms (no cell has negative indices).
_NORMS_KEY = (-1, -1, -1)


class HiResStem(nn.Module):
    """Input crop ``(B, 1, S, S, S)`` -> features ``(B, S/2, S/2, S/2, C_h)`` (channels last).

    A small U-shaped conv net, cheap enough for CPU training: Conv(k2, s2) to ``S/2``
    (``C_h`` channels), Conv(k2, s2) to ``S/4`` (``4 C_h``), one residual block of two 3x3x3
    convs there, a transposed Conv(k2, s2) back to ``S/2`` added to the first level, and a
    1x1x1 projection. Receptive field ~26 input voxels (39 mm).
    """

    def __init__(self, channels: int, in_chans: int = 1) -> None:
        super().__init__()
        wide = 4 * channels
        self.down1 = nn.Conv3d(in_chans, channels, kernel_size=2, stride=2)
        self.down2 = nn.Conv3d(channels, wide, kernel_size=2, stride=2)
        self.block = nn.Sequential(
            LayerNorm3d(wide),
            nn.Conv3d(wide, wide, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv3d(wide, wide, kernel_size=3, padding=1),
        )
        self.up = nn.ConvTranspose3d(wide, channels, kernel_size=2, stride=2)
        self.proj = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, S, S, S)`` -> ``(B, S/2, S/2, S/2, C_h)`` (channels last)."""
        h1 = F.gelu(self.down1(x))
        h2 = self.down2(h1)
        h2 = h2 + self.block(h2)
        h = F.gelu(h1 + self.up(h2))
        # the 1x1x1 projection reads channels-last memory: on a CPU ~10x faster than on
        # NCDHW memory (where it cost a third of the stem), and its output is then already
        # the channels-last layout returned, so the permute copies nothing
        h = h.contiguous(memory_format=torch.channels_last_3d)
        return self.proj(h).permute(0, 2, 3, 4, 1).contiguous()


class HiResHead(nn.Module):
    """Refines coarse logits on the stem's grid.

    ``h = GELU(F + a tanh(up(coarse)/4) + sum_k b_k map_k)``,
    ``logits = up(coarse) + w . h + bias``, with ``F`` the stem features, ``map_k`` the
    previous logits (as ``tanh(logits/4)``), the two click maps and the two similarity maps
    (:func:`click_similarity`), and ``w`` a hypernetwork
    output of the mask token. ``bias`` starts at ``logit(PRIOR_FOREGROUND)``. Computed
    channels-last, so each step is one kernel over the ``h^3 x C_h`` features (the per-click
    cost of a refinement).

    Args:
        transformer_dim: Width of the mask tokens.
        channels: ``C_h``.
        num_maps: Number of per-click maps (5: previous logits, positive and negative clicks,
            similarity to the positive and to the negative clicks).
    """

    def __init__(self, transformer_dim: int, channels: int, num_maps: int = 5) -> None:
        super().__init__()
        self.num_maps = num_maps
        # column 0 multiplies the upsampled coarse logits, the others the per-click maps
        self.map_weight = nn.Parameter(torch.zeros(channels, 1 + num_maps))
        nn.init.normal_(self.map_weight, std=0.5)
        self.hypernetwork = MLP(transformer_dim, transformer_dim, channels, 3)
        self.output_bias = nn.Parameter(
            torch.tensor(math.log(PRIOR_FOREGROUND / (1 - PRIOR_FOREGROUND)))
        )

    def forward(
        self,
        coarse: torch.Tensor,
        mask_tokens: torch.Tensor,
        features: torch.Tensor,
        maps: torch.Tensor,
    ) -> torch.Tensor:
        """Logits on the stem grid.

        Args:
            coarse: ``(B, T, c, c, c)`` coarse logits (``c = 4g``).
            mask_tokens: ``(B, T, D)`` mask-token outputs of the transformer.
            features: ``(B or 1, h, h, h, C_h)`` cached stem features, channels last
                (``h = 2c``).
            maps: ``(B, num_maps, h, h, h)``.

        Returns:
            ``(B, T, h, h, h)`` logits.
        """
        b, t = coarse.shape[:2]
        size = tuple(features.shape[1:4])
        up = upsample_trilinear(coarse, size)  # (B, T, h, h, h)
        if features.shape[0] != b:
            features = features.expand(b, *features.shape[1:])
        dtype = features.dtype
        w = self.hypernetwork(mask_tokens).to(dtype)  # (B, T, C_h)
        weight = self.map_weight.to(dtype)
        maps_last = maps.to(dtype).permute(0, 2, 3, 4, 1)  # (B, h, h, h, M)
        if not torch.is_grad_enabled():
            return (
                up + self._refine_in_chunks(up, w, features, maps_last, weight) + self.output_bias
            )
        base = torch.addmm(
            features.reshape(-1, features.shape[-1]),
            maps_last.reshape(-1, maps_last.shape[-1]),
            weight[:, 1:].t(),
        ).view(features.shape)
        out = []
        for i in range(t):
            gate = torch.tanh(up[:, i] / 4.0).to(dtype).unsqueeze(-1)  # (B, h, h, h, 1)
            h = F.gelu(torch.addcmul(base, gate, weight[:, 0]))
            out.append(torch.einsum("bnc,bc->bn", h.reshape(b, -1, h.shape[-1]), w[:, i]))
        return up + torch.stack(out, dim=1).view(b, t, *size) + self.output_bias

    def _refine_in_chunks(
        self,
        up: torch.Tensor,
        w: torch.Tensor,
        features: torch.Tensor,
        maps_last: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """``w . h`` of :meth:`forward` outside autograd, ``HEAD_CHUNK_CELLS`` cells at a time:
        the same values, but each chunk's features stay in the CPU cache for all ``T``
        outputs (about 1.4x faster for a first click's three masks on a 64^3 grid on this
        project's 2-core CPU).

        Returns ``(B, T, h, h, h)``."""
        b, t = up.shape[:2]
        channels = features.shape[-1]
        out = torch.empty(
            (b, t, features[0, ..., 0].numel()), dtype=features.dtype, device=up.device
        )
        for n in range(b):
            feats = features[n].reshape(-1, channels)
            maps = maps_last[n].reshape(feats.shape[0], -1)
            gates = torch.tanh(up[n] / 4.0).to(features.dtype).reshape(t, -1)
            for start in range(0, feats.shape[0], HEAD_CHUNK_CELLS):
                part = slice(start, start + HEAD_CHUNK_CELLS)
                base = torch.addmm(feats[part], maps[part], weight[:, 1:].t())
                for i in range(t):
                    h = F.gelu(torch.addcmul(base, gates[i, part, None], weight[:, 0]))
                    out[n, i, part] = h @ w[n, i]
        return out.view(up.shape)


def click_similarity(
    features: torch.Tensor,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    img_size: int,
    *,
    cache: dict[tuple[int, int, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """How much each cell looks like a clicked one: ``max_i exp(-|F(x) - F(c_i)|^2 / C)``.

    The maximum runs over the positive clicks (channel 0) or the negative clicks (channel 1);
    a channel without clicks is 0. This gives the head an explicit "same appearance as
    something that was clicked" signal, the cue of region growing, in learned features; with
    the maximum (not a mean prototype) positive clicks on two different tissues keep both.

    Args:
        features: ``(B or 1, h, h, h, C)`` stem features (channels last).
        coords: ``(B, N, 3)`` clicks in input voxels (tensor-axis order), or None.
        labels: ``(B, N)``: 1 positive, 0 negative, -1 ignored.
        img_size: Input edge in voxels (the grid covers it).
        cache: For one image's features (``B`` = 1) outside autograd: the ``(h^3,)`` map of
            each clicked cell, kept from earlier calls (:attr:`ImageEmbedding.similarity_maps
            <sammed3d.modeling.sam3d.ImageEmbedding>`), so a refinement click computes the
            map of its new cell only; the result is the same as without it. At most
            ``SIMILARITY_MAPS_KEPT`` maps are kept (the oldest go first).

    Returns:
        ``(B, 2, h, h, h)``.
    """
    size = features.shape[1]
    channels = features.shape[-1]
    batch = features.shape[0] if coords is None else coords.shape[0]
    out = features.new_zeros((batch, 2, size, size, size))
    if coords is None or labels is None or coords.shape[1] == 0:
        return out
    if features.shape[0] != batch:
        features = features.expand(batch, *features.shape[1:])
    cell = (coords.to(features.device, torch.float32) * size / img_size).long().clamp(0, size - 1)
    if cache is not None and batch == 1 and features.shape[0] == 1:
        return _cached_similarity(features, cell[0], labels[0], cache, out)
    b = torch.arange(batch, device=features.device)[:, None].expand_as(cell[..., 0])
    at_clicks = features[b, cell[..., 0], cell[..., 1], cell[..., 2]]  # (B, N, C)
    flat = features.reshape(batch, -1, channels)
    sq = flat.square().sum(-1)  # (B, h^3)
    lab = labels.to(features.device)
    best = [flat.new_full(sq.shape, -float("inf")) for _ in range(2)]
    for n in range(coords.shape[1]):
        sim = _similarity_map(flat, sq, at_clicks[:, n])
        for channel, value in ((0, 1), (1, 0)):
            use = (lab[:, n] == value)[:, None]
            best[channel] = torch.where(use, torch.maximum(best[channel], sim), best[channel])
    for channel in range(2):
        out[:, channel] = best[channel].clamp(min=0).view(batch, size, size, size)
    return out


def _similarity_map(flat: torch.Tensor, sq: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """``exp(-|F(x) - proto|^2 / C)`` for ``(B, h^3, C)`` features ``flat`` with ``sq`` their
    squared norms ``(B, h^3)`` and ``proto`` ``(B, C)``: ``(B, h^3)``."""
    dot = torch.einsum("bvc,bc->bv", flat, proto)
    dist = (sq - 2 * dot + proto.square().sum(-1, keepdim=True)).clamp(min=0)
    return torch.exp(-dist / flat.shape[-1])


def _cached_similarity(
    features: torch.Tensor,
    cells: torch.Tensor,
    labels: torch.Tensor,
    cache: dict[tuple[int, int, int], torch.Tensor],
    out: torch.Tensor,
) -> torch.Tensor:
    """:func:`click_similarity` of one image (``features`` ``(1, h, h, h, C)``, ``cells``
    ``(N, 3)`` grid cells, ``labels`` ``(N,)``) with each cell's map taken from ``cache`` or
    computed and kept there (under the key ``(-1, -1, -1)``: the squared feature norms)."""
    size = features.shape[1]
    flat = features.reshape(1, -1, features.shape[-1])
    best: list[torch.Tensor | None] = [None, None]
    for cell, label in zip(cells.tolist(), labels.tolist(), strict=True):
        channel = 0 if label == 1 else 1 if label == 0 else None
        if channel is None:
            continue
        key = (int(cell[0]), int(cell[1]), int(cell[2]))
        sim = cache.pop(key, None)  # re-inserted below: the newest stay longest
        if sim is None:
            sq = cache.get(_NORMS_KEY)
            if sq is None:
                sq = cache[_NORMS_KEY] = flat.square().sum(-1)
            sim = _similarity_map(flat, sq, features[:, key[0], key[1], key[2]])
        cache[key] = sim
        now = best[channel]
        best[channel] = sim if now is None else torch.maximum(now, sim)
    while len(cache) > SIMILARITY_MAPS_KEPT + (_NORMS_KEY in cache):
        oldest = next(k for k in cache if k != _NORMS_KEY)
        del cache[oldest]
    for channel, value in enumerate(best):
        if value is not None:
            out[:, channel] = value.clamp(min=0).view(1, size, size, size)
    return out


__all__ = [
    "PRIOR_FOREGROUND",
    "SIMILARITY_MAPS_KEPT",
    "HiResHead",
    "HiResStem",
    "click_similarity",
]
