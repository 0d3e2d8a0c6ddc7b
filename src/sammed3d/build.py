"""Model registry, construction and checkpoint I/O.

Every architecture number lives here (one registry entry per real variant). Checkpoints:

* the published format: ``{"model_state_dict": state_dict, ...}`` (no ``module.`` prefix);
* a bare state dict, with or without a DDP ``module.`` prefix;
* ours: the published layout plus ``"model_config"`` and ``"metadata"``, loadable with
  ``torch.load(weights_only=True)`` and by the published loaders.

Files without a config (the published ones) get their architecture inferred from tensor shapes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sammed3d.config import BEHAVIOUR_FIELDS, ModelConfig
from sammed3d.io import atomic_write
from sammed3d.modeling import ImageEncoderViT3D, MaskDecoder3D, PromptEncoder3D, Sam3D
from sammed3d.modeling.hires import HiResStem
from sammed3d.modeling.image_encoder import AttentionImpl

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "sammed3d"
CHECKPOINT_FORMAT_VERSION = 1
#: ``format`` of a task-model checkpoint (``sammed3d.task``): not a promptable model.
TASK_CHECKPOINT_FORMAT = "sammed3d-task"

_VIT_B_ORI = ModelConfig()

#: Registered architectures. ``sam_med3d`` / ``sam_med3d_turbo`` are the released ``vit_b_ori``.
MODEL_REGISTRY: dict[str, ModelConfig] = {
    "sam_med3d": _VIT_B_ORI,
    "sam_med3d_turbo": _VIT_B_ORI,
    # The parity-fixture geometry: released layout, narrower and shallower.
    "sam_med3d_small": ModelConfig(
        encoder_embed_dim=96,
        encoder_depth=4,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(1, 3),
        prompt_embed_dim=96,
    ),
    # The bundled default model (src/sammed3d/assets/sammed3d_default.pth; trained by
    # tools/train_default_model.sh on generated data): the published code path with a narrow
    # 4-block ViT (plain global attention), plus our two options: clicks drawn as dense maps
    # into the mask prompt, and a high-resolution (64^3) output path.
    "sam_med3d_demo": ModelConfig(
        encoder_embed_dim=192,
        encoder_depth=4,
        encoder_num_heads=6,
        encoder_global_attn_indexes=(0, 1, 2, 3),
        window_size=0,
        prompt_embed_dim=96,
        decoder_mlp_dim=512,
        iou_head_hidden_dim=64,
        click_maps=True,
        hires_channels=8,
    ),
    # For unit tests of our options: sam_med3d_tiny with click maps and a 32^3 high-res path.
    "sam_med3d_tiny_dense": ModelConfig(
        img_size=64,
        encoder_embed_dim=48,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(0, 1),
        window_size=0,
        prompt_embed_dim=48,
        decoder_mlp_dim=128,
        iou_head_hidden_dim=32,
        click_maps=True,
        hires_channels=4,
    ),
    # For unit tests: a 64^3 input (4^3 tokens, still padded to 14^3 windows).
    "sam_med3d_tiny": ModelConfig(
        img_size=64,
        encoder_embed_dim=48,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        prompt_embed_dim=48,
        decoder_mlp_dim=128,
        iou_head_hidden_dim=32,
    ),
}


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model (one-line message)."""


def registered_names(config: ModelConfig) -> list[str]:
    """The registry names whose architecture equals ``config`` (fields compared by
    :class:`ModelConfig` equality: behaviour options are ignored), in registry order; empty for a
    custom architecture."""
    return [name for name, registered in MODEL_REGISTRY.items() if registered == config]


def get_config(name_or_config: str | ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """Resolve a registry name, a :class:`ModelConfig` or a config dict."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        try:
            return MODEL_REGISTRY[name_or_config]
        except KeyError:
            raise ValueError(
                f"unknown model {name_or_config!r}; registered: {sorted(MODEL_REGISTRY)}"
            ) from None
    if isinstance(name_or_config, Mapping):
        return ModelConfig.from_dict(dict(name_or_config))
    raise TypeError(
        f"expected a model name, a ModelConfig or a dict, got {type(name_or_config).__name__}"
    )


def build_image_encoder(cfg: ModelConfig, attn_impl: AttentionImpl = "fast") -> ImageEncoderViT3D:
    """The image encoder of the architecture ``cfg`` (random weights, train mode)."""
    return ImageEncoderViT3D(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        embed_dim=cfg.encoder_embed_dim,
        depth=cfg.encoder_depth,
        num_heads=cfg.encoder_num_heads,
        mlp_ratio=cfg.mlp_ratio,
        out_chans=cfg.prompt_embed_dim,
        qkv_bias=True,
        use_abs_pos=True,
        use_rel_pos=True,
        window_size=cfg.window_size,
        global_attn_indexes=cfg.encoder_global_attn_indexes,
        attn_impl=attn_impl,
    )


def _build_sam3d(cfg: ModelConfig, attn_impl: AttentionImpl = "fast") -> Sam3D:
    grid = cfg.grid_size
    return Sam3D(
        image_encoder=build_image_encoder(cfg, attn_impl),
        prompt_encoder=PromptEncoder3D(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(grid, grid, grid),
            input_image_size=(cfg.img_size,) * 3,
            mask_in_chans=cfg.mask_in_chans,
            mask_prompt_channels=cfg.mask_prompt_channels,
        ),
        mask_decoder=MaskDecoder3D(
            transformer_dim=cfg.prompt_embed_dim,
            num_multimask_outputs=cfg.num_multimask_outputs,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
            transformer_depth=cfg.decoder_depth,
            transformer_num_heads=cfg.decoder_num_heads,
            transformer_mlp_dim=cfg.decoder_mlp_dim,
            attention_downsample_rate=cfg.decoder_attention_downsample_rate,
            hires_channels=cfg.hires_channels,
        ),
        hires_encoder=(
            HiResStem(cfg.hires_channels, in_chans=cfg.in_chans) if cfg.hires_channels else None
        ),
    )


def resolve_model_device(device: str | torch.device | None) -> torch.device:
    """Where :func:`build_model`, :func:`load_checkpoint` and the predictors put a model.

    The API's one device rule: names go through :func:`sammed3d.devices.resolve_device`
    (``auto``/None: a usable GPU, else the CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps``), so
    ``device="auto"`` means the same in Python as ``--device auto`` on the command line.
    ``meta`` passes unchanged (shape-only models).

    Raises:
        sammed3d.devices.DeviceError: an unknown name, or a device this installation cannot
            use (one line).
    """
    from sammed3d.devices import resolve_device

    if isinstance(device, torch.device) and device.type == "meta":
        return device
    if isinstance(device, str) and device.strip().lower() == "meta":
        return torch.device("meta")
    return resolve_device(device)


def build_model(
    name_or_config: str | ModelConfig | Mapping[str, Any] = "sam_med3d_turbo",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    attn_impl: AttentionImpl = "fast",
    allow_unsafe_pickle: bool = False,
) -> Sam3D:
    """Build a model, optionally loading weights strictly from ``checkpoint``.

    Args:
        name_or_config: A registry name (``sam_med3d``, ``sam_med3d_turbo``, ...), a
            :class:`ModelConfig` or a config dict.
        checkpoint: Weights to load (a file or a published name, read by
            :func:`read_checkpoint`); keys and shapes must match the architecture, and so must
            the architecture the file records, if any.
        device: Where to put the model (:func:`resolve_model_device`: ``auto``, ``cpu``, ...).
        attn_impl: ``"fast"`` (exact, default) or ``"reference"`` encoder attention.
        allow_unsafe_pickle: Allow unpickling arbitrary objects (old published files). Only
            for files you trust.

    Returns:
        A :class:`Sam3D` in eval mode.

    Raises:
        FileNotFoundError / CheckpointError: see :func:`read_checkpoint`; weights or a recorded
            architecture that do not fit (one line naming the keys or the differing fields).
    """
    cfg = get_config(name_or_config)
    model = _build_sam3d(cfg, attn_impl=attn_impl)
    model.config = cfg  # type: ignore[assignment]
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint, allow_unsafe_pickle=allow_unsafe_pickle)
        if ckpt.config is not None and ckpt.config != cfg:  # also fields without own shapes
            raise CheckpointError(
                f"{ckpt.path} does not fit the model: it was saved for another architecture "
                f"({_config_diff(ckpt.config, cfg)})"
            )
        _load_state_dict_strict(model, ckpt.state_dict, source=str(ckpt.path))
        model.checkpoint_path = ckpt.path  # type: ignore[assignment]
        if ckpt.config is not None:  # behaviours the weights were trained for
            model.config = with_behaviours(cfg, ckpt.config)  # type: ignore[assignment]
    return model.to(resolve_model_device(device)).eval()


def with_behaviours(cfg: ModelConfig, saved: ModelConfig) -> ModelConfig:
    """``cfg`` with the behaviours a checkpoint records taken from ``saved``.

    Behaviours are the :class:`ModelConfig` fields that change no tensor shape and do not
    take part in comparing architectures (``compare=False``: ``first_click_multimask``,
    ``negative_click_similarity`` and the inference rules such as ``zoom_spacing``); every
    loader of a checkpoint with a ``model_config`` (:func:`build_model`, a resumed training
    run) keeps them, so a model is the same model however it is read back.
    """
    return dataclasses.replace(cfg, **{n: getattr(saved, n) for n in BEHAVIOUR_FIELDS})


class _Checkpoint:
    """What a checkpoint file holds, normalised."""

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor],
        config: ModelConfig | None,
        metadata: dict[str, Any],
        path: Path | None = None,
    ) -> None:
        self.path = path  # the file read (a published name resolved to its cached file)
        self.state_dict = state_dict
        self.config = config
        self.metadata = metadata


def resolve_checkpoint_path(path: str | os.PathLike[str] | None) -> Path:
    """Resolve a checkpoint argument to a file: what :func:`sammed3d.paths.require_checkpoint`
    resolves, and a training run folder (or its ``checkpoints`` folder) to the run's newest
    checkpoint (:func:`sammed3d.training.checkpoint.find_latest_checkpoint`: the ``latest.json``
    pointer, else ``final.pth``, else the highest step), logged as the file used.

    Raises:
        FileNotFoundError: no such file nor name (see ``require_checkpoint``).
        CheckpointError: a folder that holds no checkpoint of a training run.
    """
    from sammed3d.paths import require_checkpoint

    resolved = require_checkpoint(path)
    if not resolved.is_dir():
        return resolved
    from sammed3d.training.checkpoint import CHECKPOINT_DIR, find_latest_checkpoint

    found = find_latest_checkpoint(resolved)
    if found is None and resolved.name == CHECKPOINT_DIR:  # the run's checkpoints/ folder
        found = find_latest_checkpoint(resolved.parent)
    if found is None:
        raise CheckpointError(
            f"no checkpoint in run folder {resolved}: it is a directory, expected a .pth file "
            f"or a training run folder holding {CHECKPOINT_DIR}/final.pth, "
            f"{CHECKPOINT_DIR}/latest.json or {CHECKPOINT_DIR}/step_*.pth"
        )
    logger.info("using %s, the newest checkpoint of the run folder %s", found, resolved)
    return found


def read_checkpoint(
    path: str | os.PathLike[str] | None, *, allow_unsafe_pickle: bool = False
) -> _Checkpoint:
    """Read and normalise a checkpoint file without building a model.

    This is where a checkpoint argument is resolved (:func:`resolve_checkpoint_path`: a file, a
    published name or a training run folder) for every loader; callers pass what the user gave
    and read the file used from the result (``.path``; a loaded model's ``checkpoint_path``).

    Args:
        path: A checkpoint file, or the name of published weights (``turbo``, ``sam_med3d``,
            ``default``; see :mod:`sammed3d.weights`), fetched and verified on first use; a
            training run folder (its newest checkpoint); None: the default checkpoint.
        allow_unsafe_pickle: Allow pickled Python objects besides tensors (trusted files only).

    Raises:
        FileNotFoundError: no such file and no such name.
        CheckpointError: the file is not a checkpoint (HTML page, truncated, plain pickle,
            random bytes, ...: the message says what it looks like) or holds no SAM-Med3D
            state dict.
        sammed3d.weights.WeightsError: published weights could not be fetched or verified.
    """
    path = resolve_checkpoint_path(path)
    obj = _torch_load(path, allow_unsafe_pickle)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} is not a SAM-Med3D checkpoint: expected a dict of tensors or a dict with "
            f"'model_state_dict', got {type(obj).__name__}"
        )
    if obj.get("format") == TASK_CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a task-model checkpoint (a multi-class segmenter on the SAM-Med3D "
            "encoder), not a promptable SAM-Med3D model: use it with `sammed3d predict "
            "--checkpoint`"
        )
    config: ModelConfig | None = None
    metadata: dict[str, Any] = {}
    if "model_state_dict" in obj:
        raw = obj["model_state_dict"]
        if obj.get("model_config") is not None:
            try:
                config = ModelConfig.from_dict(dict(obj["model_config"]))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: invalid model_config: {exc}") from None
        metadata = dict(obj.get("metadata") or {})
        for key in ("epoch", "best_loss", "best_dice"):
            if key in obj and key not in metadata and isinstance(obj[key], int | float):
                metadata[key] = obj[key]
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        raw = obj["state_dict"]
    else:
        raw = obj
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{path} holds no state dict (empty or not a mapping)")
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path} is not a SAM-Med3D checkpoint: entry {key!r} is a "
                f"{type(value).__name__}, expected a tensor"
            )
        state_dict[key.removeprefix("module.")] = value
    if not any(k.startswith("image_encoder.") for k in state_dict):
        sample = ", ".join(list(state_dict)[:3])
        raise CheckpointError(
            f"{path} is not a SAM-Med3D checkpoint: no 'image_encoder.*' keys (found e.g. {sample})"
        )
    return _Checkpoint(state_dict, config, metadata, path)


#: Modules whose pickled callables run code on load (never in a published checkpoint).
_CODE_RUNNING_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "builtins",
        "__builtin__",
        "sys",
        "shutil",
        "socket",
        "runpy",
        "importlib",
        "webbrowser",
        "pty",
        "code",
        "codeop",
        "ctypes",
        "pickle",
        "marshal",
    }
)


def _torch_load(path: Path, allow_unsafe_pickle: bool) -> Any:
    """``torch.load`` behind a format check; every failure is one line that never advises
    unsafe loading (only a real torch archive with non-tensor objects names the opt-in)."""
    from sammed3d.sniff import checkpoint_problem

    try:
        problem = checkpoint_problem(path)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if problem is not None:
        raise CheckpointError(f"{path} {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as exc:
        m = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(exc))
        if not allow_unsafe_pickle and m and m.group(1).split(".")[0] in _CODE_RUNNING_MODULES:
            raise CheckpointError(
                f"{path} pickles {m.group(1)}, which runs code when the file is loaded: not a "
                "model checkpoint; do not load it"
            ) from None
        if not allow_unsafe_pickle and m:
            raise CheckpointError(
                f"{path} is a PyTorch checkpoint that also pickles Python objects ({m.group(1)}; "
                "an older published file?); if you trust its source, load it with "
                "allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle)"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: {_torch_reason(exc)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{_torch_reason(exc)}"
        ) from None
    except Exception as exc:  # unpickling arbitrary bytes raises nearly anything
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: {_torch_reason(exc)}"
        ) from None


def _torch_reason(exc: BaseException, limit: int = 160) -> str:
    """One line from a torch error: the unpickler's own reason, never torch's advice text."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("WeightsUnpickler error:"):
            lines = [ln.removeprefix("WeightsUnpickler error:").strip()]
            break
    lines = [ln for ln in lines if "weights_only" not in ln and "trusted source" not in ln]
    text = re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Infer the architecture from tensor shapes (for files that carry no config).

    Recovers embed dims, depths, heads (from the relative-position table width), which blocks
    are global (table length ``2*grid - 1``), the window size, image and patch size, MLP widths
    and the decoder layout. Decoder heads cannot be seen in shapes: the released value (8) is used.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"cannot infer the architecture: missing key {key!r}")
        return tuple(state_dict[key].shape)

    try:
        pos = shape("image_encoder.pos_embed")  # (1, g, g, g, C)
        proj = shape("image_encoder.patch_embed.proj.weight")  # (C, in, p, p, p)
        embed_dim, grid, patch = pos[-1], pos[1], proj[-1]
        block_ids = sorted(
            {
                int(m.group(1))
                for k in state_dict
                if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))
            }
        )
        depth = len(block_ids)
        if block_ids != list(range(depth)) or depth == 0:
            raise CheckpointError(f"encoder blocks are not numbered 0..N-1: {block_ids}")
        head_dim = shape("image_encoder.blocks.0.attn.rel_pos_d")[1]
        global_idx, windows = [], set()
        for i in range(depth):
            length = shape(f"image_encoder.blocks.{i}.attn.rel_pos_d")[0]
            if length == 2 * grid - 1:
                global_idx.append(i)
            else:
                windows.add((length + 1) // 2)
        if len(windows) > 1:
            raise CheckpointError(f"blocks use different window sizes {sorted(windows)}")
        mlp_hidden = shape("image_encoder.blocks.0.mlp.lin1.weight")[0]
        prompt_dim = shape("image_encoder.neck.0.weight")[0]
        dec_layers = {
            int(m.group(1))
            for k in state_dict
            if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))
        }
        iou_layers = {
            int(m.group(1))
            for k in state_dict
            if (m := re.match(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.", k))
        }
        cross = shape("mask_decoder.transformer.final_attn_token_to_image.q_proj.weight")[0]
        return ModelConfig(
            img_size=grid * patch,
            patch_size=patch,
            encoder_embed_dim=embed_dim,
            encoder_depth=depth,
            encoder_num_heads=embed_dim // head_dim,
            encoder_global_attn_indexes=tuple(global_idx),
            window_size=windows.pop() if windows else 0,
            prompt_embed_dim=prompt_dim,
            in_chans=proj[1],
            mlp_ratio=mlp_hidden / embed_dim,
            mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
            num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
            iou_head_depth=len(iou_layers),
            iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
            decoder_depth=len(dec_layers),
            decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
            decoder_attention_downsample_rate=prompt_dim // cross,
            click_maps=shape("prompt_encoder.mask_downscaling.0.weight")[1] > 1,
            hires_channels=(
                shape("hires_encoder.down1.weight")[0]
                if "hires_encoder.down1.weight" in state_dict
                else 0
            ),
        )
    except (IndexError, ZeroDivisionError) as exc:
        raise CheckpointError(f"cannot infer the architecture from tensor shapes: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"inferred an invalid architecture: {exc}") from None


def _load_state_dict_strict(
    model: Sam3D, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_preview(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _config_diff(got: ModelConfig, expected: ModelConfig) -> str:
    """``field=got (expected value)`` for the first differing fields of two configs."""
    a, b = got.to_dict(), expected.to_dict()
    diffs = [f"{k}={a[k]!r} (expected {b[k]!r})" for k in a if a[k] != b.get(k)]
    return ", ".join(diffs[:6]) or "(configs differ)"


def _preview(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def load_checkpoint(
    path: str | os.PathLike[str] | None,
    device: str | torch.device = "cpu",
    *,
    attn_impl: AttentionImpl = "fast",
    allow_unsafe_pickle: bool = False,
) -> Sam3D:
    """Load a checkpoint file into a new model (architecture from its config or its shapes).

    Args:
        path: A published checkpoint (``sam_med3d.pth``, ``sam_med3d_turbo.pth``), a bare state
            dict, or a file written by :func:`save_checkpoint`; a published name (``turbo``);
            None: the default checkpoint (:func:`read_checkpoint` resolves it). The file
            read is recorded as the model's ``checkpoint_path``.
        device: Where to put the model (:func:`resolve_model_device`: ``auto``, ``cpu``, ...).
        attn_impl: ``"fast"`` (exact, default) or ``"reference"`` encoder attention.
        allow_unsafe_pickle: Needed for the original Google-Drive files, which pickle non-tensor
            objects. Only for files you trust.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, truncated, not a SAM-Med3D checkpoint, or keys/shapes that
            do not fit (the message names them).
    """
    ckpt = read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    cfg = ckpt.config or infer_config(ckpt.state_dict)
    model = _build_sam3d(cfg, attn_impl=attn_impl)
    model.config = cfg  # type: ignore[assignment]
    _load_state_dict_strict(model, ckpt.state_dict, source=str(ckpt.path))
    model.metadata = ckpt.metadata  # type: ignore[assignment]
    model.checkpoint_path = ckpt.path  # type: ignore[assignment]
    return model.to(resolve_model_device(device)).eval()


def model_config_of(model: Sam3D) -> ModelConfig:
    """The :class:`ModelConfig` a model was built from (inferred if it was built by hand)."""
    cfg = getattr(model, "config", None)
    if isinstance(cfg, ModelConfig):
        return cfg
    return infer_config(model.state_dict())


def model_name(model: Sam3D) -> str:
    """The name a loaded model goes by in reports (an evaluation's progress bar and plot).

    A published or bundled file, recognised by its sha256, is named by the weights table's
    architecture (``sam_med3d_turbo``, ``sam_med3d_demo``: turbo and the original share one
    architecture); any other model by the first registry name of its architecture
    (``sam_med3d`` for a fine-tuned ViT-B, :func:`registered_names`), else ``"custom"``.
    """
    from sammed3d import weights

    path = getattr(model, "checkpoint_path", None)
    if path is not None:
        try:
            entry = weights.match_sha256(weights.sha256_cached(path))
        except OSError:  # moved or deleted since it was loaded: named by its architecture
            entry = None
        if entry is not None and entry.architecture:
            return entry.architecture
    names = registered_names(model_config_of(model))
    return names[0] if names else "custom"


def save_checkpoint(
    model: Sam3D,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` atomically in our format (a superset of the published one).

    The file holds ``model_state_dict`` (published key names, no ``module.`` prefix),
    ``model_config`` and ``metadata`` (plain Python values), so it loads with
    ``weights_only=True`` here and with the published loaders. ``extra`` entries (optimizer
    state, ...) are stored at the top level.
    """
    module = getattr(model, "module", model)  # unwrap DDP
    header = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_config": model_config_of(module).to_dict(),
    }
    return write_checkpoint(module, header, path, metadata, extra)


def write_checkpoint(
    module: torch.nn.Module,
    header: Mapping[str, Any],
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``header`` + ``module``'s CPU state dict + ``metadata`` + ``extra`` atomically.

    The one writer behind :func:`save_checkpoint` and the task checkpoints: keys
    ``model_state_dict`` and ``metadata`` next to the caller's ``header`` (its format keys),
    ``extra`` (training state) at the top level.

    Raises:
        ValueError: ``extra`` uses a reserved key.
    """
    path = Path(path)
    payload: dict[str, Any] = {
        **header,
        "model_state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    if extra:
        clash = set(extra) & set(payload)
        if clash:
            raise ValueError(f"extra keys clash with reserved checkpoint keys: {sorted(clash)}")
        payload.update(extra)
    atomic_torch_save(payload, path)
    return path


def settings_beyond_weights(model: Sam3D) -> tuple[str, ...]:
    """The fields of a model's :class:`ModelConfig` that its weights alone do not give back.

    A file with ``model_state_dict`` only (:func:`export_published`) is loaded with the
    config :func:`infer_config` reads from the tensor shapes; every field where that config
    differs from the model's own is lost with it: our behaviours that change no shape
    (``first_click_multimask``, the inference rules such as ``zoom_spacing``) and what shapes
    cannot show (``decoder_num_heads`` other than the released 8). Empty for the published
    models.

    Returns:
        The field names, in :class:`ModelConfig` order.
    """
    module = getattr(model, "module", model)
    own = model_config_of(module)
    inferred = infer_config(module.state_dict())
    return tuple(
        f.name
        for f in dataclasses.fields(ModelConfig)
        if f.name != "extra" and getattr(own, f.name) != getattr(inferred, f.name)
    )


def export_published(model: Sam3D, path: str | os.PathLike[str]) -> Path:
    """Write ``{"model_state_dict": ...}`` only, the layout the published tools read.

    What the weights alone do not carry (:func:`settings_beyond_weights`) is not written;
    :func:`save_checkpoint` keeps it next to the same ``model_state_dict``."""
    path = Path(path)
    module = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    atomic_torch_save({"model_state_dict": state}, path)
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`sammed3d.io.atomic_write` (temp file, fsync, umask mode,
    rename over ``path``)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
