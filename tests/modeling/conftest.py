"""Fixtures for the parity tests: the published SAM-Med3D network from ``medim``, offline.

``medim`` (PyPI, Apache-2.0, by the SAM-Med3D authors) ships the published classes and the
``vit_b_ori`` builder (registered as ``"SAM-Med3D"``). Without ``pretrained=True`` it builds
the network locally; its import reads ``$MEDIM_CKPT_DIR`` and imports ``requests`` but opens no
connection. Both the import and every model creation run here with sockets refused, and any
attempt is recorded (``test_medim_is_offline`` asserts there was none).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import torch

from sammed3d import ModelConfig

#: The medim release the parity was established with (also pinned in constraints.txt).
MEDIM_VERSION = "0.1.2"

#: ModelConfig fields that medim's builder hard-codes to the released values.
_FIXED_IN_MEDIM = (
    "window_size", "in_chans", "mlp_ratio", "mask_in_chans", "num_multimask_outputs",
    "iou_head_depth", "iou_head_hidden_dim", "decoder_depth", "decoder_num_heads",
    "decoder_mlp_dim", "decoder_attention_downsample_rate",
)  # fmt: skip


@dataclass
class Medim:
    """The imported ``medim`` package and the network attempts seen while using it."""

    module: ModuleType
    cache_dir: Path
    attempts: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        with _network_refused(self.attempts, self.cache_dir):
            yield

    def build(self, config: ModelConfig) -> torch.nn.Module:
        """The published network for ``config`` (random init, eval mode), built offline."""
        release = ModelConfig()
        changed = [n for n in _FIXED_IN_MEDIM if getattr(config, n) != getattr(release, n)]
        if changed:
            raise ValueError(f"medim's builder cannot vary {changed}")
        with self.offline(), contextlib.redirect_stdout(io.StringIO()):  # "creating model"
            model = self.module.create_model(
                "SAM-Med3D",
                pretrained=False,
                encoder_embed_dim=config.encoder_embed_dim,
                encoder_depth=config.encoder_depth,
                encoder_num_heads=config.encoder_num_heads,
                encoder_global_attn_indexes=list(config.encoder_global_attn_indexes),
                prompt_embed_dim=config.prompt_embed_dim,
                image_size=config.img_size,
                vit_patch_size=config.patch_size,
            )
        return model.eval()


@contextlib.contextmanager
def _network_refused(attempts: list[str], cache_dir: Path) -> Iterator[None]:
    """Refuse (and record) every socket connection and name lookup; no hub cache/endpoint."""

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[-1] if args else kwargs)[:200])
        raise OSError("network access is refused in the parity tests")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setenv("MEDIM_CKPT_DIR", str(cache_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def medim(tmp_path_factory: pytest.TempPathFactory) -> Medim:
    """``medim``, imported offline; skips when it is missing (fails under CI=true)."""
    cache_dir = tmp_path_factory.mktemp("medim_cache")
    attempts: list[str] = []
    with _network_refused(attempts, cache_dir):
        try:
            import medim as module
        except ImportError as exc:
            msg = f"medim is not installed ({exc}); install the dev extras: pip install -e '.[dev]'"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    return Medim(module=module, cache_dir=cache_dir, attempts=attempts)


def random_state_dict(reference: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random values for every entry of a SAM-Med3D state dict (names and shapes kept).

    Every tensor gets non-trivial values so that no quirk hides behind a zero init (the
    published init zeroes the absolute and relative position tables): LayerNorm scales
    ``1 + 0.1 N(0,1)``, biases ``0.05 N``, position tables ``0.5 N`` (absolute) and
    ``0.15 N`` (relative), prompt/output tokens ``0.5 N``, the Gaussian PE matrix ``N``, and
    linear/conv weights ``N / sqrt(fan_in)``.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, ref in reference.items():
        r = torch.randn(ref.shape, generator=gen, dtype=torch.float32)
        module = name.rsplit(".", 1)[0]
        if name.endswith("positional_encoding_gaussian_matrix"):
            value = r
        elif name.endswith("pos_embed"):
            value = 0.5 * r
        elif ".rel_pos_" in name:
            value = 0.15 * r
        elif name.endswith(".bias"):
            value = 0.05 * r
        elif ref.ndim == 1:  # LayerNorm / LayerNorm3d scales
            value = 1.0 + 0.1 * r
        elif module.endswith(("_embed", "token", "tokens")) or ".point_embeddings." in name:
            value = 0.5 * r
        else:
            value = r / math.sqrt(math.prod(ref.shape[1:]))
        out[name] = value.to(ref.dtype)
    return out


@pytest.fixture(scope="session")
def random_weights() -> Callable[[Mapping[str, torch.Tensor], int], dict[str, torch.Tensor]]:
    """:func:`random_state_dict`, for the test modules."""
    return random_state_dict
