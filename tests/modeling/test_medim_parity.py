"""Parity with the published SAM-Med3D network itself, built by ``medim`` on the same weights.

Reference: ``medim`` 0.1.2 (PyPI, Apache-2.0, by the SAM-Med3D authors), whose
``create_model("SAM-Med3D")`` is the published ``vit_b_ori`` builder with the published
classes. It is built offline with random weights (see ``conftest.py``); every state-dict
entry then gets seeded random values (``random_state_dict``: nothing stays at its zero init,
so no quirk can hide), and the *same* state dict is loaded strictly into our model.

Compared (max |diff| <= 1e-4 in float32 on CPU; binary masks identical except where the
reference logit is within 1e-4 of 0): state-dict names, order and shapes; the image embedding
for both our encoder paths (``attn_impl="fast"`` and ``"reference"``); the dense PE; and, for
each step of a click sequence (first click with a zero mask prompt, accumulated clicks, newest
click only, no mask prompt, mask-only prompt, multimask, a batch of two prompts), the sparse
and dense prompt embeddings, the low-res logits, the IoU predictions and the binary mask after
trilinear upsampling, through the published call signatures of the three sub-modules. A step's
mask prompt is the published chain's previous low-res logits, fed to both networks.

Geometry. ``SMALL`` keeps the released geometry and with it the three quirks (docs/faithfulness.md
§3): 128³ input, patch 16, an 8³ token grid, window 14, so the windowed blocks attend over
padded 14³ windows (quirk A) with 27-row relative-position tables read by the scrambled formula
(quirk B), and point coordinates on the 128 scale against the swapped dense grid (quirk C);
only the widths and depth are reduced (encoder 96 wide, 4 blocks, 4 heads, global blocks 1
and 3; prompt/decoder width 96; the decoder's transformer and IoU head are the released ones,
hard-coded in medim). ``test_quirks_are_exercised`` shows that these weights make each quirk
matter far beyond the tolerance. The slow test repeats the comparison on the full released
ViT-B (100,509,232 parameters).

Checked once against the project's reference fixtures (``../shared/fixtures``, produced from
the published repository's own modules), 2026-11-30: medim's builder with the fixture config
and ``sammed3d_small.pth`` loaded strictly reproduced ``sammed3d_small_cases.npz`` (image
embedding max |diff| 3.1e-6, dense PE 0, sparse embeddings 0, dense embeddings <= 8.3e-7,
low-res logits <= 1.7e-6, IoU <= 2.4e-7, binary masks identical except one voxel whose
reference logit is within 1e-4 of 0), and medim's default ViT-B has exactly the 324 state-dict
names and shapes, in order, of ``sammed3d_vitb_state_dict_keys.tsv``. So medim's network is the
published one. ``tests/modeling/test_parity.py`` repeats that check wherever ``../shared`` is
present (it skips on a plain clone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import pytest
import torch
import torch.nn.functional as F

from sammed3d import ModelConfig, build_model

TOL = 1e-4

SMALL = ModelConfig(
    encoder_embed_dim=96,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    prompt_embed_dim=96,
)
VIT_B = ModelConfig()  # the released vit_b_ori


@dataclass(frozen=True)
class Step:
    """One prompt step; ``points``/``labels`` are ``(B, N, 3)``/``(B, N)`` or None.

    ``mask`` is ``"zeros"`` (first click of the published regime), ``"previous"`` (the
    previous step's first low-res channel, the published feedback) or ``"none"``.
    """

    points: list[list[list[float]]] | None
    labels: list[list[int]] | None
    mask: str
    multimask: bool


# Coordinates in tensor-axis order of the 128³ input, as the published click generators give.
STEPS = (
    Step([[[40.0, 70.0, 90.0]]], [[1]], "zeros", False),
    Step([[[40.0, 70.0, 90.0], [60.0, 50.0, 20.0]]], [[1, 0]], "previous", False),  # accumulated
    Step([[[100.0, 20.0, 64.0]]], [[1]], "previous", False),  # newest click only
    Step([[[0.0, 127.0, 64.0]]], [[1]], "none", False),  # no mask prompt, border voxel
    Step(None, None, "previous", False),  # mask-only prompt (training's point-free steps)
    Step([[[12.0, 100.0, 33.0]]], [[0]], "previous", True),  # multimask, negative click
    Step([[[30.0, 30.0, 30.0]], [[90.0, 100.0, 5.0]]], [[1], [0]], "previous", False),  # B=2
)


def _prompt(step: Step) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, int]:
    if step.points is None:
        return None, 1
    coords = torch.tensor(step.points, dtype=torch.float32)
    labels = torch.tensor(step.labels, dtype=torch.int64)
    return (coords, labels), coords.shape[0]


def _mask_prompt(step: Step, previous: torch.Tensor | None, batch: int, size: int):
    if step.mask == "none":
        return None
    if step.mask == "zeros" or previous is None:
        return torch.zeros(batch, 1, size, size, size)
    return previous[:1, :1].expand(batch, -1, -1, -1, -1).contiguous()


def run_chain(
    model: torch.nn.Module,
    embedding: torch.Tensor,
    steps: tuple[Step, ...],
    upsample: Callable[[torch.Tensor], torch.Tensor],
    mask_inputs: list[torch.Tensor | None] | None = None,
) -> list[dict[str, torch.Tensor | None]]:
    """Run ``steps`` through ``model``'s sub-modules with the published call signatures.

    The mask prompt of a ``"previous"`` step is the model's own previous logits, or, with
    ``mask_inputs``, the given ones (the reference chain's), so that every step is compared
    on identical inputs and float rounding does not compound from step to step.
    """
    size = 4 * embedding.shape[-1]  # the low-res logits (and mask prompts): 4x the token grid
    previous = None
    outputs: list[dict[str, torch.Tensor | None]] = []
    with torch.inference_mode():
        pe = model.prompt_encoder.get_dense_pe()
        for i, step in enumerate(steps):
            points, batch = _prompt(step)
            if mask_inputs is None:
                masks = _mask_prompt(step, previous, batch, size)
            else:
                masks = mask_inputs[i]
            sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=masks)
            low, iou = model.mask_decoder(
                image_embeddings=embedding,
                image_pe=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=step.multimask,
            )
            up = upsample(low[:, :1])
            outputs.append(
                {"sparse": sparse, "dense": dense, "low": low, "iou": iou, "up": up, "pe": pe,
                 "mask_in": masks}
            )  # fmt: skip
            previous = low
    return outputs


def _mask_inputs(chain: list[dict]) -> list[torch.Tensor | None]:
    return [step["mask_in"] for step in chain]


def _published_upsample(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """What every published pipeline does: trilinear, align_corners=False, to the crop."""
    return lambda low: F.interpolate(
        low, size=(size, size, size), mode="trilinear", align_corners=False
    )


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    if a.numel() == 0:  # e.g. the sparse embedding of a mask-only prompt
        return 0.0
    return (a.float() - b.float()).abs().max().item()


def assert_chain_matches(ours: list[dict], ref: list[dict], steps: tuple[Step, ...]) -> None:
    for i, (o, r, step) in enumerate(zip(ours, ref, steps, strict=True)):
        for key in ("sparse", "dense", "low", "iou"):
            diff = max_diff(o[key], r[key])
            assert diff <= TOL, f"step {i} {key}: max |diff| {diff:.2e}"
        assert o["low"].shape[1] == (3 if step.multimask else 1)
        # Binary masks identical except where the reference logit is within TOL of 0.
        differ = (o["up"] > 0) != (r["up"] > 0)
        assert not (differ & (r["up"].abs() > TOL)).any(), f"step {i}: binary mask differs"


@dataclass
class Pair:
    """The published network and ours on the same random state dict, plus a test image."""

    config: ModelConfig
    published: torch.nn.Module
    ours: torch.nn.Module
    state_dict: dict[str, torch.Tensor]
    image: torch.Tensor


def make_pair(medim, random_weights, config: ModelConfig, seed: int) -> Pair:
    published = medim.build(config)
    state = random_weights(published.state_dict(), seed)
    published.load_state_dict(state, strict=True)
    ours = build_model(config).eval()
    ours.load_state_dict(state, strict=True)
    gen = torch.Generator().manual_seed(seed + 1)
    s = config.img_size
    image = torch.randn(1, 1, s, s, s, generator=gen)  # already z-scored, as the pipelines feed
    return Pair(config, published, ours, state, image)


@pytest.fixture(scope="module")
def small(medim, random_weights) -> Pair:
    return make_pair(medim, random_weights, SMALL, seed=7)


@pytest.fixture(scope="module")
def small_reference(small) -> dict:
    """The published network's outputs: embedding and the whole click chain."""
    with torch.inference_mode():
        emb = small.published.image_encoder(small.image)
    chain = run_chain(small.published, emb, STEPS, _published_upsample(small.config.img_size))
    return {"embedding": emb, "chain": chain}


def _set_impl(model: torch.nn.Module, impl: str) -> None:
    model.image_encoder.set_attn_impl(impl)


# ---- offline, layout ------------------------------------------------------------------------


def test_medim_is_offline(medim):
    """Importing medim and building both geometries opened no connection."""
    assert metadata.version("medim") == "0.1.2"
    with torch.device("meta"):
        medim.build(SMALL)
        medim.build(VIT_B)
    assert medim.attempts == []


@pytest.mark.parametrize("config", [SMALL, VIT_B], ids=["small", "vit_b"])
def test_state_dict_names_shapes_and_order(medim, config):
    with torch.device("meta"):
        published = medim.build(config).state_dict()
        ours = build_model(config, device="meta").state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [
        (k, tuple(v.shape)) for k, v in published.items()
    ]
    if config == VIT_B:
        assert len(published) == 324
        assert sum(v.numel() for v in published.values()) == 100_509_616  # + the PE buffer


def test_random_weights_are_not_trivial(small, small_reference):
    """The comparisons below run on outputs of order 1, not on near-zero numbers."""
    emb = small_reference["embedding"]
    assert 0.3 < emb.std().item() < 3.0
    lows = torch.cat([c["low"].flatten() for c in small_reference["chain"]])
    assert lows.std().item() > 0.1
    fraction = (small_reference["chain"][0]["up"] > 0).float().mean().item()
    assert 0.01 < fraction < 0.99  # the binary mask is neither empty nor full


# ---- small geometry, both encoder paths ----------------------------------------------------


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_image_embedding(small, small_reference, impl):
    _set_impl(small.ours, impl)
    try:
        with torch.inference_mode():
            emb = small.ours.image_encoder(small.image)
    finally:
        _set_impl(small.ours, "fast")
    diff = max_diff(emb, small_reference["embedding"])
    assert diff <= TOL, f"{impl}: max |diff| {diff:.2e}"


def test_dense_pe(small, small_reference):
    with torch.inference_mode():
        pe = small.ours.prompt_encoder.get_dense_pe()
    assert max_diff(pe, small_reference["chain"][0]["pe"]) <= TOL


def test_prompt_and_decoder_steps(small, small_reference):
    """Decoder parity on the published embedding (independent of the encoder)."""
    ref = small_reference["chain"]
    emb = small_reference["embedding"]
    chain = run_chain(small.ours, emb, STEPS, small.ours.upsample_logits, _mask_inputs(ref))
    assert_chain_matches(chain, ref, STEPS)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_full_chain_from_image(small, small_reference, impl):
    """Our encoder (each path) -> every step, against the published chain."""
    _set_impl(small.ours, impl)
    try:
        with torch.inference_mode():
            emb = small.ours.image_encoder(small.image)
    finally:
        _set_impl(small.ours, "fast")
    ref = small_reference["chain"]
    chain = run_chain(small.ours, emb, STEPS, small.ours.upsample_logits, _mask_inputs(ref))
    assert_chain_matches(chain, ref, STEPS)


def test_decode_helper_matches_published_chain(small, small_reference):
    """``Sam3D.decode`` + ``upsample_logits`` (our convenience API) give the same step 1."""
    ref0, ref1 = small_reference["chain"][:2]
    (coords, labels), _ = _prompt(STEPS[1])
    with torch.inference_mode():
        low, iou = small.ours.decode(
            small_reference["embedding"], coords, labels, ref0["low"][:, :1]
        )
        up = small.ours.upsample_logits(low)
    assert max_diff(low, ref1["low"]) <= TOL and max_diff(iou, ref1["iou"]) <= TOL
    assert not (((up > 0) != (ref1["up"] > 0)) & (ref1["up"].abs() > TOL)).any()


# ---- the comparison can fail: each quirk moves the numbers far beyond TOL -------------------


def _intended_rel_pos(attn, q, rel_pos_d, rel_pos_h, rel_pos_w, q_size, k_size, *, get_rel_pos):
    """The decomposed rel-pos as intended: q(d,h,w)·(Rd[d-kd] + Rh[h-kh] + Rw[w-kw])."""
    (qd, qh, qw), (kd, kh, kw) = q_size, k_size
    rd, rh, rw = (
        get_rel_pos(qd, kd, rel_pos_d),
        get_rel_pos(qh, kh, rel_pos_h),
        get_rel_pos(qw, kw, rel_pos_w),
    )
    b, _, dim = q.shape
    r_q = q.reshape(b, qd, qh, qw, dim)
    rel_d = torch.einsum("bdhwc,dkc->bdhwk", r_q, rd)
    rel_h = torch.einsum("bdhwc,hkc->bdhwk", r_q, rh)
    rel_w = torch.einsum("bdhwc,wkc->bdhwk", r_q, rw)
    attn = attn.view(b, qd, qh, qw, kd, kh, kw)
    attn = attn + rel_d[..., :, None, None] + rel_h[..., None, :, None] + rel_w[..., None, None, :]
    return attn.view(b, qd * qh * qw, kd * kh * kw)


def test_quirks_are_exercised(medim, small, small_reference, monkeypatch):
    """Without quirk A or with the intended rel-pos (no quirk B) the embedding moves > 100 TOL;
    the published prompt encoder has quirk C (point PE of (a,b,c) = dense PE of (b,a,c))."""
    ref = small_reference["embedding"]

    # A: the same weights without padding (window 8 = the grid; the 27-row tables cut to the
    # 15 rows of offsets -7..7) give another embedding.
    unpadded = build_model(
        ModelConfig(**{**SMALL.to_dict(), "window_size": SMALL.grid_size})
    ).eval()
    state = dict(small.state_dict)
    for name, value in state.items():
        if ".rel_pos_" in name and value.shape[0] == 2 * 14 - 1:
            state[name] = value[14 - SMALL.grid_size : 14 + SMALL.grid_size - 1]
    unpadded.load_state_dict(state, strict=True)
    with torch.inference_mode():
        assert max_diff(unpadded.image_encoder(small.image), ref) > 100 * TOL

    # B: the published network with the intended (unscrambled) formula differs from itself.
    sam_med3d = medim.module.models.sam_med3d
    intended = lambda *a: _intended_rel_pos(*a, get_rel_pos=sam_med3d.get_rel_pos)  # noqa: E731
    monkeypatch.setattr(sam_med3d, "add_decomposed_rel_pos", intended)
    with torch.inference_mode():
        assert max_diff(small.published.image_encoder(small.image), ref) > 100 * TOL
    monkeypatch.undo()

    # C: in the published prompt encoder, axes 0 and 1 swap between point and dense PE.
    pe_layer = small.published.prompt_encoder.pe_layer
    with torch.inference_mode():
        dense = pe_layer((8, 8, 8))  # (C, 8, 8, 8)
        a, b, c = 1, 5, 3  # cell indices; the voxel at the cell centre
        voxel = torch.tensor([[[a * 16 + 7.5, b * 16 + 7.5, c * 16 + 7.5]]])
        point = pe_layer.forward_with_coords(voxel + 0.5, (128, 128, 128))[0, 0]
    assert max_diff(point, dense[:, b, a, c]) <= 1e-5
    assert max_diff(point, dense[:, a, b, c]) > 100 * TOL


# ---- the released ViT-B ---------------------------------------------------------------------


@pytest.mark.slow
def test_vit_b(medim, random_weights):
    """Full ViT-B on one random state dict: both encoder paths and three prompt steps."""
    pair = make_pair(medim, random_weights, VIT_B, seed=3)
    assert sum(p.numel() for p in pair.published.parameters()) == 100_509_232
    assert sum(p.numel() for p in pair.ours.parameters()) == 100_509_232
    steps = (STEPS[0], STEPS[3], STEPS[5])  # zero mask prompt, none, multimask
    with torch.inference_mode():
        emb_ref = pair.published.image_encoder(pair.image)
    ref = run_chain(pair.published, emb_ref, steps, _published_upsample(128))
    for impl in ("fast", "reference"):
        _set_impl(pair.ours, impl)
        with torch.inference_mode():
            emb = pair.ours.image_encoder(pair.image)
        diff = max_diff(emb, emb_ref)
        assert diff <= TOL, f"{impl}: max |diff| {diff:.2e}"
        chain = run_chain(pair.ours, emb, steps, pair.ours.upsample_logits, _mask_inputs(ref))
        assert_chain_matches(chain, ref, steps)
