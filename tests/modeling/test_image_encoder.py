"""Image encoder: fast path == reference path, quirks A and B, shapes."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import randomize_

from sammed3d.modeling.image_encoder import (
    Attention,
    ImageEncoderViT3D,
    add_decomposed_rel_pos,
    get_rel_pos,
)


def _encoder(**kw) -> ImageEncoderViT3D:
    args = dict(
        img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, out_chans=24,
        window_size=14, global_attn_indexes=(1,),
    )  # fmt: skip
    args.update(kw)
    return randomize_(ImageEncoderViT3D(**args), seed=3, std=0.2).eval()


@pytest.mark.parametrize(
    "kw",
    [
        {},  # released layout: every windowed block is one padded 14^3 window
        {"window_size": 4},  # windows exactly tile the grid (no padding)
        {"window_size": 3},  # several windows with padding (falls back to reference)
        {"window_size": 0},  # all blocks global
        {"img_size": 96, "window_size": 7},  # 6^3 grid padded to 7^3
    ],
)
def test_fast_equals_reference(kw):
    enc = _encoder(**kw)
    x = torch.randn(2, 1, enc.img_size, enc.img_size, enc.img_size)
    with torch.inference_mode():
        fast = enc(x)
        enc.set_attn_impl("reference")
        ref = enc(x)
    grid = enc.img_size // 16
    assert fast.shape == (2, 24, grid, grid, grid)
    assert (fast - ref).abs().max().item() < 1e-4


def test_bad_attn_impl():
    with pytest.raises(ValueError, match="attn_impl"):
        _encoder().set_attn_impl("flash")  # type: ignore[arg-type]


def test_padded_window_is_not_plain_attention():
    """Quirk A: the padded keys change the result versus attention over real tokens only."""
    attn = randomize_(
        Attention(16, num_heads=2, use_rel_pos=True, input_size=(14, 14, 14)), std=0.3
    )
    x = torch.randn(1, 4, 4, 4, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        padded = attn.forward_fast(x, padded_size=14)
        plain = attn.forward_fast(x, padded_size=4)
        # brute force: pad with zeros to 14^3 and attend over all tokens, then crop
        full = torch.zeros(1, 14, 14, 14, 16)
        full[:, :4, :4, :4] = x
        brute = attn(full)[:, :4, :4, :4]
    torch.testing.assert_close(padded, brute, rtol=1e-4, atol=1e-4)
    assert (padded - plain).abs().max() > 1e-3


def test_scrambled_rel_pos_formula():
    """Quirk B: the bias added equals the documented scrambled formula, by brute force."""
    s, c = 5, 3
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, s**3, c, generator=gen)
    tables = [torch.randn(2 * s - 1, c, generator=gen) for _ in range(3)]
    bias = add_decomposed_rel_pos(torch.zeros(1, s**3, s**3), q, *tables, (s,) * 3, (s,) * 3)
    rd, rh, rw = (get_rel_pos(s, s, t) for t in tables)  # R[i, j] = table[i - j + s - 1]
    qg = q.view(s, s, s, c)
    bias = bias.view(s, s, s, s, s, s)
    for d, h, w, kd, kh, kw in [(0, 1, 2, 3, 4, 0), (4, 4, 4, 0, 0, 0), (2, 0, 3, 1, 2, 4)]:
        expected = qg[d, h, w] @ rd[d, kw] + qg[d, h, kd] @ rh[h, kw] + qg[d, h, kh] @ rw[kh, kw]
        intended = qg[d, h, w] @ (rd[d, kd] + rh[h, kh] + rw[w, kw])
        assert torch.allclose(bias[d, h, w, kd, kh, kw], expected, atol=1e-5)
        assert not torch.allclose(bias[d, h, w, kd, kh, kw], intended, atol=1e-3)


def test_patch_embed_matches_conv():
    enc = _encoder()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        conv = enc.patch_embed.proj(x).permute(0, 2, 3, 4, 1)
        fast = enc.patch_embed(x)
    torch.testing.assert_close(fast, conv, rtol=1e-5, atol=1e-4)


def test_patch_embed_rejects_bad_size():
    with pytest.raises(ValueError, match="not divisible by patch size 16"):
        _encoder().patch_embed(torch.zeros(1, 1, 64, 64, 60))


def test_bf16_autocast_runs_close():
    enc = _encoder()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(x)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.25 * ref.abs().max()
