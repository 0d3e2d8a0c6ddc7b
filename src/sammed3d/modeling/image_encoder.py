"""ViT image encoder of SAM-Med3D (``ImageEncoderViT3D``).

Two implementations of the attention blocks live here and give the same numbers:

* ``"reference"`` mirrors the published computation step by step: windowed blocks zero-pad
  the normalised token grid up to ``window_size`` on the high side of each axis, attend over
  every token of every window, then crop.
* ``"fast"`` (the default) computes only what the output depends on. It is exact, not an
  approximation; the derivation is in :func:`_padded_window_logsumexp`.

The two quirks of the published encoder that the released weights depend on are reproduced
by both paths (see ``docs/faithfulness.md`` §3):

QUIRK A (padded windows).
    The released model has ``window_size=14`` on an ``8^3`` token grid, so every "windowed"
    block pads the grid to ``14^3`` and attends over 2744 keys of which 2232 are zero
    vectors. Their keys and values equal the qkv biases and they carry position-dependent
    relative-position logits, diluting the real tokens' attention.

QUIRK B (scrambled decomposed relative position).
    The 3D port reuses the 2D broadcasting of ``add_decomposed_rel_pos`` on 7-D tensors. The
    bias actually added for query ``(d, h, w)`` and key ``(kd, kh, kw)`` is::

        q(d,h,w) . Rd[d - kw]  +  q(d,h,kd) . Rh[h - kw]  +  q(d,h,kh) . Rw[kh - kw]

    instead of the intended ``q(d,h,w) . (Rd[d-kd] + Rh[h-kh] + Rw[w-kw])``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sammed3d.modeling.common import LayerNorm3d, MLPBlock

AttentionImpl = Literal["fast", "reference"]
_ATTENTION_IMPLS = ("fast", "reference")


class ImageEncoderViT3D(nn.Module):
    """3D ViT encoder: ``(B, in_chans, S, S, S)`` -> ``(B, out_chans, S/p, S/p, S/p)``.

    Args:
        img_size: Edge length ``S`` of the cubic input.
        patch_size: Edge length ``p`` of the cubic patches (``S % p == 0``).
        in_chans: Input channels (1 for the released model).
        embed_dim: Token width.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: Hidden width of the block MLP relative to ``embed_dim``.
        out_chans: Channels of the neck output (the prompt embedding dim).
        qkv_bias: Bias on the qkv projection.
        use_abs_pos: Learned absolute position embedding.
        use_rel_pos: Decomposed relative position bias (with quirk B).
        window_size: Window edge of the non-global blocks (0: every block is global).
        global_attn_indexes: Blocks that attend over the whole grid.
        attn_impl: ``"fast"`` (default) or ``"reference"``.
    """

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 384,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        attn_impl: AttentionImpl = "fast",
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed3D(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim))
        self.blocks = nn.ModuleList()
        for i in range(depth):
            self.blocks.append(
                Block3D(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    use_rel_pos=use_rel_pos,
                    window_size=window_size if i not in global_attn_indexes else 0,
                    input_size=(grid, grid, grid),
                )
            )
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans),
        )
        self.set_attn_impl(attn_impl)

    @property
    def attn_impl(self) -> AttentionImpl:
        return self._attn_impl

    def set_attn_impl(self, impl: AttentionImpl) -> None:
        """Select ``"fast"`` (default, exact) or ``"reference"`` (published computation)."""
        if impl not in _ATTENTION_IMPLS:
            raise ValueError(f"attn_impl must be one of {_ATTENTION_IMPLS}, got {impl!r}")
        self._attn_impl: AttentionImpl = impl
        for blk in self.blocks:
            blk.attn_impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x`` of shape ``(B, in_chans, S, S, S)`` into ``(B, out_chans, g, g, g)``."""
        x = self.patch_embed(x)  # (B, g, g, g, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))  # (B, out_chans, g, g, g)


class PatchEmbed3D(nn.Module):
    """Non-overlapping cubic patches -> tokens, channels last ``(B, g, g, g, C)``."""

    def __init__(self, patch_size: int = 16, in_chans: int = 1, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.proj.kernel_size[0]
        b, c, d, h, w = x.shape
        if d % p or h % p or w % p:
            raise ValueError(f"input spatial shape {(d, h, w)} is not divisible by patch size {p}")
        # Same arithmetic as the stride-p convolution, as one matmul (much faster on CPU).
        x = x.reshape(b, c, d // p, p, h // p, p, w // p, p)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, d // p, h // p, w // p, c * p**3)
        return F.linear(x, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


class Block3D(nn.Module):
    """Pre-norm transformer block; windowed when ``window_size > 0``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int, int] = (8, 8, 8),
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size,) * 3
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=attn_size,
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size
        self.attn_impl: AttentionImpl = "fast"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, D, H, W, C)`` tokens, returned in the same shape."""
        shortcut = x
        x = self.norm1(x)
        ws = self.window_size
        grid = x.shape[1:4]
        if ws == 0:
            x = self.attn.forward_fast(x) if self.attn_impl == "fast" else self.attn(x)
        elif self.attn_impl == "fast" and all(ws >= g for g in grid):
            # One window covering the whole grid plus zero padding (the released config).
            x = self.attn.forward_fast(x, padded_size=ws)
        else:
            x, pad_dhw = window_partition3D(x, ws)
            x = self.attn(x)
            x = window_unpartition3D(x, ws, pad_dhw, tuple(grid))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention with the (scrambled) decomposed relative position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos=True")
            self.rel_pos_d = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[2] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reference path: plain attention over every token of ``x`` ``(B, D, H, W, C)``."""
        b, d, h, w, _ = x.shape
        n = d * h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, n, -1).unbind(0)  # (B*nH, N, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(
                attn, q, self.rel_pos_d, self.rel_pos_h, self.rel_pos_w, (d, h, w), (d, h, w)
            )
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(b, self.num_heads, d, h, w, -1).permute(0, 2, 3, 4, 1, 5)
        return self.proj(x.reshape(b, d, h, w, -1))

    def forward_fast(self, x: torch.Tensor, padded_size: int | None = None) -> torch.Tensor:
        """Exact fast path for ``x`` ``(B, D, H, W, C)``.

        With ``padded_size`` the published computation would zero-pad the grid to
        ``padded_size^3`` tokens and crop afterwards (quirk A). Padded tokens are zero after
        the norm, so their key and value are the qkv biases; only the real query rows are
        kept. All padded keys therefore collapse into ONE extra key whose value is the value
        bias and whose logit is ``log sum_j exp(logit_j)`` over the padded positions, which
        factorises over the axes (see :func:`_padded_window_logsumexp`). Attention then runs
        over ``N + 1`` keys instead of ``padded_size^3``.
        """
        b, d, h, w, c = x.shape
        nh = self.num_heads
        n = d * h * w
        qkv = self.qkv(x).view(b, n, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, nH, N, hd)
        hd = q.shape[-1]
        size = (d, h, w) if padded_size is None else (padded_size,) * 3
        bias: torch.Tensor | None = None
        rel: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if self.use_rel_pos:
            qg = q.reshape(b, nh, d, h, w, hd)
            if padded_size is not None and padded_size > w:
                # Queries at padded w positions are the q bias (zero token after the norm).
                q_bias = self._qkv_bias_part(0, q)
                pad_q = q_bias.view(1, nh, 1, 1, 1, hd).expand(b, nh, d, h, padded_size - w, hd)
                q_ext = torch.cat([qg, pad_q], dim=4)
            else:
                q_ext = qg
            rd = get_rel_pos(size[0], size[0], self.rel_pos_d)[:d]  # (d, Kd, hd)
            rh = get_rel_pos(size[1], size[1], self.rel_pos_h)[:h]  # (h, Kh, hd)
            rw = get_rel_pos(size[2], size[2], self.rel_pos_w)  # (Kw, Kw, hd)
            # rel_d[.., d, h, w, kw] = q(d,h,w) . Rd[d - kw]
            rel_d = torch.einsum("bndhwc,dkc->bndhwk", qg, rd)
            # rel_h[.., d, h, x, kw] = q(d,h,x) . Rh[h - kw]   (x is read as the key's kd)
            rel_h = torch.einsum("bndhxc,hkc->bndhxk", q_ext, rh)
            # rel_w[.., d, h, x, kw] = q(d,h,x) . Rw[x - kw]   (x is read as the key's kh)
            rel_w = torch.einsum("bndhxc,xkc->bndhxk", q_ext, rw)
            rel = (rel_d, rel_h, rel_w)
            bias = (
                (
                    rel_d[..., None, None, :w]  # (.., d, h, w, 1, 1, kw)
                    + rel_h[:, :, :, :, None, :d, None, :w]  # (.., d, h, 1, kd, 1, kw)
                    + rel_w[:, :, :, :, None, None, :h, :w]  # (.., d, h, 1, 1, kh, kw)
                ).reshape(b, nh, n, n)
            )
        if padded_size is not None and padded_size**3 > n:
            k_bias = self._qkv_bias_part(1, q)
            v_bias = self._qkv_bias_part(2, q)
            pad_logit = (q @ k_bias.view(1, nh, hd, 1)).squeeze(-1) * self.scale  # (B, nH, N)
            pad_logit = pad_logit + _padded_window_logsumexp(rel, (d, h, w), padded_size, q)
            if bias is None:
                bias = torch.zeros(b, nh, n, n, dtype=q.dtype, device=q.device)
            bias = torch.cat([bias, pad_logit.unsqueeze(-1)], dim=-1)  # (B, nH, N, N+1)
            k = torch.cat([k, k.new_zeros(b, nh, 1, hd)], dim=2)
            v = torch.cat([v, v_bias.view(1, nh, 1, hd).expand(b, nh, 1, hd)], dim=2)
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.permute(0, 2, 1, 3).reshape(b, d, h, w, c)
        return self.proj(out)

    def _qkv_bias_part(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """The q (0), k (1) or v (2) part of the qkv bias, ``(nH, hd)``; zeros without bias."""
        c = self.qkv.in_features
        if self.qkv.bias is None:
            return like.new_zeros(self.num_heads, c // self.num_heads)
        return self.qkv.bias[index * c : (index + 1) * c].view(self.num_heads, -1).to(like.dtype)


def _padded_window_logsumexp(
    rel: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    real: tuple[int, int, int],
    size: int,
    like: torch.Tensor,
) -> torch.Tensor:
    """``log sum exp`` of the relative-position logits over the padded keys, per real query.

    For query ``(d, h, w)`` and a padded key ``(kd, kh, kw)`` of the ``size^3`` window the
    relative term is ``A[kw] + B[kd, kw] + C[kh, kw]`` with ``A = rel_d[d,h,w,:]``,
    ``B = rel_h[d,h,:,:]`` and ``C = rel_w[d,h,:,:]`` (quirk B). The padded keys are the
    window minus the real ``D x H x W`` block, split into three disjoint boxes::

        kw >= W                      : sum_kw e^A (sum_{all kd} e^B) (sum_{all kh} e^C)
        kw <  W, kd >= D             : sum_kw e^A (sum_{kd>=D} e^B) (sum_{all kh} e^C)
        kw <  W, kd <  D, kh >= H    : sum_kw e^A (sum_{kd<D}  e^B) (sum_{kh>=H} e^C)

    Each box factorises, so the whole sum costs ``O(size^2)`` per query and stays in log space.
    Returns ``(B, nH, N)``.
    """
    d, h, w = real
    b, nh, n, _ = like.shape
    if rel is None:
        n_pad = size**3 - n
        return torch.full((b, nh, n), float(n_pad), dtype=like.dtype, device=like.device).log()
    rel_d, rel_h, rel_w = rel
    a = rel_d  # (B, nH, d, h, w, K)
    lb_all = rel_h.logsumexp(dim=4)  # over kd -> (B, nH, d, h, K)
    lb_lo = rel_h[:, :, :, :, :d].logsumexp(dim=4)
    lb_hi = rel_h[:, :, :, :, d:].logsumexp(dim=4) if size > d else None
    lc_all = rel_w.logsumexp(dim=4)  # over kh
    lc_hi = rel_w[:, :, :, :, h:].logsumexp(dim=4) if size > h else None
    parts = []
    if size > w:
        parts.append(a[..., w:] + (lb_all + lc_all)[:, :, :, :, None, w:])
    if lb_hi is not None:
        parts.append(a[..., :w] + (lb_hi + lc_all)[:, :, :, :, None, :w])
    if lc_hi is not None:
        parts.append(a[..., :w] + (lb_lo + lc_hi)[:, :, :, :, None, :w])
    return torch.cat(parts, dim=-1).logsumexp(dim=-1).reshape(b, nh, n)


def window_partition3D(
    x: torch.Tensor, window_size: int
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad ``(B, D, H, W, C)`` on the high side to multiples of ``window_size`` and split.

    Returns windows ``(B * nW, ws, ws, ws, C)`` and the padded shape ``(Dp, Hp, Wp)``.
    """
    b, d, h, w, c = x.shape
    pad_d = (window_size - d % window_size) % window_size
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_d or pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h, 0, pad_d))
    dp, hp, wp = d + pad_d, h + pad_h, w + pad_w
    ws = window_size
    x = x.view(b, dp // ws, ws, hp // ws, ws, wp // ws, ws, c)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, ws, ws, ws, c)
    return windows, (dp, hp, wp)


def window_unpartition3D(
    windows: torch.Tensor,
    window_size: int,
    pad_dhw: tuple[int, int, int],
    dhw: tuple[int, ...],
) -> torch.Tensor:
    """Inverse of :func:`window_partition3D`, cropping the padding: ``(B, D, H, W, C)``."""
    dp, hp, wp = pad_dhw
    d, h, w = dhw
    ws = window_size
    b = windows.shape[0] // ((dp // ws) * (hp // ws) * (wp // ws))
    x = windows.view(b, dp // ws, hp // ws, wp // ws, ws, ws, ws, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, dp, hp, wp, -1)
    return x[:, :d, :h, :w, :].contiguous()


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position table rows for every (query, key) pair: ``(q_size, k_size, C)``.

    Row ``i - j + k_size - 1`` for query ``i`` and key ``j``; the table is linearly resized
    when its length does not match (never the case for the released configuration).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos_resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        rel_pos_resized = rel_pos
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos_resized[relative_coords.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_d: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int, int],
    k_size: tuple[int, int, int],
) -> torch.Tensor:
    """Published decomposed relative position bias, including its broadcasting (quirk B).

    ``attn``: ``(B, Nq, Nk)`` logits; ``q``: ``(B, Nq, C)`` unscaled queries. The per-axis
    terms are 5-D but are broadcast as if 4-D into the 7-D logits, which scrambles the key
    axes; the released weights were trained with exactly this. Needs a cubic grid.
    """
    q_d, q_h, q_w = q_size
    k_d, k_h, k_w = k_size
    rd = get_rel_pos(q_d, k_d, rel_pos_d)
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_d, q_h, q_w, dim)
    rel_d = torch.einsum("bdhwc,dkc->bdhwk", r_q, rd)
    rel_h = torch.einsum("bdhwc,hkc->bdhwk", r_q, rh)
    rel_w = torch.einsum("bdhwc,wkc->bdhwk", r_q, rw)
    attn = (
        attn.view(b, q_d, q_h, q_w, k_d, k_h, k_w)
        + rel_d[:, :, :, :, None, None]
        + rel_h[:, :, :, None, :, None]
        + rel_w[:, :, :, None, None, :]
    )
    return attn.view(b, q_d * q_h * q_w, k_d * k_h * k_w)
