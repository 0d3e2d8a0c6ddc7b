"""The training loop: the published click-simulation regime, DDP, AMP and resumable runs.

Example:
    >>> from sammed3d.training import load_config, train
    >>> cfg = load_config("finetune_turbo", ["data.roots=[/data/Dataset001_Foo]",
    ...                                      "model.init_checkpoint=sam_med3d_turbo.pth"])
    >>> result = train(cfg)                 # or: torchrun --nproc_per_node 8 -m sammed3d train ...
    >>> result = train(cfg, resume=True)    # continue an interrupted run in cfg.run.output_dir

Run folder (``run.output_dir``)::

    config.yaml                 the resolved config
    checkpoints/step_XXXXXXXX.pth, final.pth, latest.json
    log.jsonl                   one line per logged step (loss, Dice per click, LR, samples/s)
    tensorboard/                TensorBoard scalars
    summary.json                status, steps, throughput, peak memory (written at the end)

Checkpoints hold ``model_state_dict`` (published key names), ``model_config``, ``metadata``
and the training state (optimizer, scheduler, grad scaler, data position, RNG states and the
resolved config). They load with ``sammed3d.load_checkpoint`` and ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import bisect
import inspect
import json
import logging
import math
import os
import random
import resource
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from sammed3d.build import (
    CheckpointError,
    _load_state_dict_strict,
    build_model,
    get_config,
    load_checkpoint,
    model_config_of,
    save_checkpoint,
)
from sammed3d.config import ModelConfig
from sammed3d.modeling import Sam3D
from sammed3d.training.config import (
    ConfigError,
    TrainingConfig,
    diff_configs,
    save_config,
)
from sammed3d.training.data import (
    AugmentConfig,
    CachedTargetDataset,
    CacheParams,
    EpochDistributedSampler,
    batch_zscore,
    build_cache,
    load_cached_targets,
    per_rank_samples,
    step_rng,
    steps_per_epoch,
)
from sammed3d.training.distributed import (
    DistContext,
    all_reduce_mean,
    any_rank,
    barrier,
    cleanup_distributed,
    init_distributed,
    maybe_no_sync,
    unwrap,
)
from sammed3d.training.interaction import ClickLoop, mask_only_iterations

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST_POINTER = "latest.json"
FINAL_NAME = "final.pth"

#: Parameters the published regime never trains: ``train.py`` has no IoU loss, always passes a
#: mask prompt and decodes mask 0 only. They are frozen, so DDP needs no
#: ``find_unused_parameters`` (AdamW skips parameters without gradients anyway). Hypernetwork
#: MLPs 1-3 are added by :func:`never_trained_parameters`.
NEVER_TRAINED_PREFIXES = ("mask_decoder.iou_prediction_head.", "prompt_encoder.no_mask_embed.")


def never_trained_parameters(model: Sam3D) -> list[str]:
    """Names of the parameters that get no gradient in the published regime.

    The IoU head, ``no_mask_embed`` and the hypernetwork MLPs of masks 1..3 (only mask 0 is
    decoded with ``multimask_output=False``).
    """
    prefixes = NEVER_TRAINED_PREFIXES + tuple(
        f"mask_decoder.output_hypernetworks_mlps.{i}."
        for i in range(1, len(model.mask_decoder.output_hypernetworks_mlps))
    )
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: The run folder.
        checkpoint: The last checkpoint written (``final.pth`` when finished).
        global_step: Optimizer steps taken in total.
        epoch: Completed epochs.
        finished: All epochs done (False when stopped early by ``stop_after_steps`` or SIGTERM).
        last_loss: Mean loss of the last logged window (click-summed DiceCE).
        samples_per_second: Training throughput of this invocation (all ranks).
        peak_memory_mb: Peak device memory (CUDA) or peak resident memory (CPU) on rank 0.
    """

    run_dir: Path
    checkpoint: Path | None
    global_step: int
    epoch: int
    finished: bool
    last_loss: float | None = None
    samples_per_second: float | None = None
    peak_memory_mb: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


#: Signals that make a run checkpoint at the next step and stop: SIGTERM (schedulers,
#: pre-emption) and SIGINT (Ctrl-C; a second one quits at once).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _leave_stop_to_main(worker_id: int) -> None:
    """DataLoader worker start: ignore the stop signals (the main process handles them).

    Workers still end with the main process (PyTorch's workers watch their parent).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def train(
    config: TrainingConfig,
    *,
    resume: bool = False,
    dataset: Dataset[dict[str, torch.Tensor]] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train (or fine-tune) a model as configured.

    Under ``torchrun`` every process calls this; the process group is created and destroyed
    here.

    Args:
        config: The resolved configuration.
        resume: Continue the run in ``config.run.output_dir`` from its latest checkpoint
            (model, optimizer, scheduler, grad scaler, data position, RNG).
        dataset: Use this dataset instead of the configured one (items: ``image``/``label``
            ``(1, S, S, S)``, ``seed``; indexed by the ``(epoch, index)`` keys of
            :class:`~sammed3d.training.data.EpochDistributedSampler`).
        show_progress: tqdm progress bar on rank 0.

    Returns:
        A :class:`TrainResult` (on every rank).

    Raises:
        FileNotFoundError: missing init checkpoint, dataset root or resume checkpoint.
        CheckpointError: an init/resume checkpoint that does not fit the configured model.
        ConfigError: an invalid setting for this machine (e.g. fp16 on CPU) or a run folder that
            already holds checkpoints without ``resume``.
    """
    trainer = Trainer(config, resume=resume, dataset=dataset, show_progress=show_progress)
    return trainer.fit()


def checkpoint_candidates(run_dir: str | os.PathLike[str]) -> list[Path]:
    """A run's checkpoints, newest first: the ``latest.json`` pointer's file, ``final.pth``,
    then ``step_*.pth`` from the highest step down (each once; only existing files)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    out: list[Path] = []
    pointer = ckpt_dir / LATEST_POINTER
    if pointer.exists():
        try:
            name = json.loads(pointer.read_text(encoding="utf-8"))["file"]
            if (ckpt_dir / name).exists():
                out.append(ckpt_dir / name)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable %s", pointer)
    if (ckpt_dir / FINAL_NAME).exists():
        out.append(ckpt_dir / FINAL_NAME)
    out += sorted(ckpt_dir.glob("step_*.pth"), reverse=True)
    return list(dict.fromkeys(out))  # each once, newest first


def find_latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint of a run (``latest.json`` pointer, else ``final.pth``, else the
    highest step), or None."""
    candidates = checkpoint_candidates(run_dir)
    return candidates[0] if candidates else None


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp`` on ``device`` (None = fp32)."""
    if mode == "none":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs a CUDA device; use bf16 or none on CPU")
        return torch.float16
    raise ConfigError(f"train.amp must be auto, none, bf16 or fp16, got {mode!r}")


def make_grad_scaler(device: torch.device, enabled: bool) -> Any:
    """A GradScaler (only enabled for fp16 autocast); a no-op object when disabled."""
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # pragma: no cover - older torch


def _atomic_write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    """RNG states as ``weights_only``-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            logger.warning("could not restore CUDA RNG states (different device count)")


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class Trainer:
    """Owns one training run: model, optimizer, data, checkpoints and logs.

    Args:
        config: Resolved configuration.
        resume: Continue from the latest checkpoint in ``config.run.output_dir``.
        dataset: Optional dataset overriding ``config.data`` (tests, benchmarks).
        show_progress: Progress bar on rank 0.
        ctx: An existing distributed context (default: read the torchrun environment and own
            the process group).
    """

    def __init__(
        self,
        config: TrainingConfig,
        *,
        resume: bool = False,
        dataset: Dataset[dict[str, torch.Tensor]] | None = None,
        show_progress: bool = True,
        ctx: DistContext | None = None,
    ) -> None:
        self.cfg = config
        self.resume = resume
        self.show_progress = show_progress
        self._dataset = dataset
        self._ctx = ctx
        self.run_dir = Path(config.run.output_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.global_step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False
        #: The stop signal received (SIGTERM or SIGINT), if any.
        self.stop_signal: signal.Signals | None = None
        self._last_saved_step = -1
        self._last_checkpoint: Path | None = None

    # ---------------------------------------------------------------- setup

    def _check_run_dir(self) -> Path | None:
        latest = find_latest_checkpoint(self.run_dir)
        if self.resume:
            if latest is None:
                raise FileNotFoundError(
                    f"nothing to resume: no checkpoint in {self.ckpt_dir} "
                    f"(expected {LATEST_POINTER} or step_*.pth)"
                )
            return latest
        if latest is not None:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints ({latest.name}); continue it with "
                "--resume or choose another run.output_dir"
            )
        return None

    @property
    def semantic(self) -> bool:
        """``task.kind=semantic``: a task model (``sammed3d.training.semantic``)."""
        return self.cfg.task.kind == "semantic"

    def _build_model(self, resume: tuple[Path, dict[str, Any]] | None) -> Sam3D:
        if self.semantic:
            from sammed3d.training.semantic import build_task_model

            return build_task_model(self.cfg, resume)  # type: ignore[return-value]
        m = self.cfg.model
        expected = get_config(m.name)
        torch.manual_seed(self.cfg.train.seed)  # identical initial weights on every rank
        if resume is not None:
            path, obj = resume
            model = build_model(expected)
            saved = obj.get("model_config")
            if saved is not None and ModelConfig.from_dict(dict(saved)) != expected:
                raise CheckpointError(
                    f"{path} was trained with a different architecture than "
                    f"model.name={m.name!r}: "
                    f"{_config_diff(ModelConfig.from_dict(dict(saved)), expected)}"
                )
            _load_state_dict_strict(model, obj["model_state_dict"], str(path))
            return model
        if m.init_checkpoint:
            from sammed3d.paths import require_checkpoint

            try:  # a file, or a published name such as "turbo" (fetched and verified)
                path = require_checkpoint(m.init_checkpoint)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"init {exc}") from None
            model = load_checkpoint(path, allow_unsafe_pickle=m.allow_unsafe_pickle)
            got = model_config_of(model)
            if got != expected:
                raise CheckpointError(
                    f"init checkpoint {path} does not fit model.name={m.name!r}: "
                    f"{_config_diff(got, expected)}"
                )
            model.config = expected  # type: ignore[assignment]
            logger.info("initialised from %s", path)
            return model
        if m.require_init:
            raise ConfigError(
                "this config fine-tunes a pre-trained model: set model.init_checkpoint "
                "(CLI: --init CKPT); refusing to train from scratch"
            )
        logger.info("training %s from scratch (random initialisation)", m.name)
        return build_model(expected)

    def _freeze(self, model: Sam3D) -> None:
        if self.semantic:
            from sammed3d.training.semantic import freeze_task_model

            freeze_task_model(model, self.cfg.model.freeze_image_encoder)  # type: ignore[arg-type]
            return
        t = self.cfg.train
        never = set() if t.find_unused_parameters else set(never_trained_parameters(model))
        for name, p in model.named_parameters():
            if name in never:
                p.requires_grad_(False)
            if self.cfg.model.freeze_image_encoder and name.startswith("image_encoder."):
                p.requires_grad_(False)

    def _build_optimizer(self, model: Sam3D) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups = []
        if self.semantic:  # layer-wise decay groups of the task model
            from sammed3d.training.semantic import semantic_param_groups

            groups = semantic_param_groups(model, self.cfg)  # type: ignore[arg-type]
        base_lrs = {} if self.semantic else _group_base_lrs(o)
        for name, lr in base_lrs.items():
            module = getattr(model, name, None)
            if module is None:
                continue
            params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            if o.no_decay_norms_embeddings:
                skip = _no_decay_names(module)
                decay = [p for n, p in params if n not in skip]
                plain = [p for n, p in params if n in skip]
                if decay:
                    groups.append({"params": decay, "lr": lr, "name": name})
                if plain:
                    groups.append(
                        {"params": plain, "lr": lr, "name": f"{name}.no_decay", "weight_decay": 0.0}
                    )
            elif params:
                groups.append({"params": [p for _, p in params], "lr": lr, "name": name})
        if not groups:
            raise ConfigError("no trainable parameters (everything is frozen)")
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), weight_decay=o.weight_decay
        )

    def _build_scheduler(self, steps_per_epoch: int) -> Any:
        """MultiStepLR per epoch (published) or cosine per optimizer step (option)."""
        o = self.cfg.optim
        if o.schedule == "cosine":
            total = max(1, self.cfg.train.epochs * steps_per_epoch)
            return torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: _cosine_factor(step, total, o.min_lr_ratio)
            )
        return torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(o.milestones), gamma=o.gamma
        )

    def _build_dataset(self, ctx: DistContext) -> Dataset[dict[str, torch.Tensor]]:
        if self._dataset is not None:
            return self._dataset
        d = self.cfg.data
        if self.semantic:
            from sammed3d.training.semantic_data import build_semantic_dataset

            return build_semantic_dataset(self.cfg, ctx, show_progress=self.show_progress)
        parts: list[Dataset[dict[str, torch.Tensor]]] = []
        if d.roots:
            parts.append(build_training_dataset(self.cfg, ctx, show_progress=self.show_progress))
        if d.synthetic_per_epoch > 0:
            parts.append(build_generated_dataset(self.cfg))
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    # ---------------------------------------------------------------- checkpoints

    def _train_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "world_size": self.ctx.world_size,
        }

    def _save(self, final: bool = False) -> Path | None:
        """Write a checkpoint on rank 0 (atomic), update ``latest.json`` and rotate."""
        if not self.ctx.is_main:
            return None
        name = FINAL_NAME if final else f"step_{self.global_step:08d}.pth"
        path = self.ckpt_dir / name
        state = self._train_state()
        from sammed3d.task.checkpoint import save_task_checkpoint

        (save_task_checkpoint if self.semantic else save_checkpoint)(
            unwrap(self.loop).model,  # type: ignore[union-attr, arg-type]
            path,
            metadata={
                "epoch": self.epoch,
                "global_step": self.global_step,
                "finished": final,
                "run_dir": str(self.run_dir),
                "source": "sammed3d.training",
            },
            extra={
                "epoch": self.epoch,
                "optimizer_state_dict": self.optimizer.state_dict(),
                "lr_scheduler_state_dict": self.scheduler.state_dict(),
                "scaler_state_dict": self.scaler.state_dict(),
                "train_state": state,
                "rng_state": _rng_state(),
                "train_config": self.cfg.to_dict(),
            },
        )
        _atomic_write_json({"file": name, **state}, self.ckpt_dir / LATEST_POINTER)
        steps = sorted(self.ckpt_dir.glob("step_*.pth"))
        for old in steps[: max(0, len(steps) - self.cfg.run.keep_last)]:
            old.unlink(missing_ok=True)
        self._last_saved_step = self.global_step
        self._last_checkpoint = path
        self._last_save_time = time.perf_counter()
        logger.debug("saved %s", path)
        return path

    @staticmethod
    def _load_resume(path: Path) -> dict[str, Any]:
        """Read a training checkpoint (once; all of it is needed)."""
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated/corrupt files raise many types
            raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {exc}") from None
        keys = ("model_state_dict", "optimizer_state_dict", "lr_scheduler_state_dict")
        missing = [k for k in (*keys, "train_state") if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise CheckpointError(
                f"{path} is not a training checkpoint (missing {missing}); use it as "
                "--init instead of --resume"
            )
        return obj

    def _load_resume_or_older(self, newest: Path) -> tuple[Path, dict[str, Any]]:
        """Read the newest checkpoint; if it is corrupt or truncated (a crash while it was
        copied, a full disk), fall back to the next older valid one, saying so.

        Raises:
            CheckpointError: no checkpoint of the run can be read (naming the newest's problem).
        """
        candidates = [newest] + [p for p in checkpoint_candidates(self.run_dir) if p != newest]
        problems: list[str] = []
        for path in candidates:
            try:
                obj = self._load_resume(path)
            except CheckpointError as exc:
                problems.append(str(exc))
                logger.warning("cannot resume from %s: %s", path.name, str(exc).splitlines()[0])
                continue
            if path != newest:
                logger.warning(
                    "resuming from the older checkpoint %s (global step %s) because the newest, "
                    "%s, is unusable; the steps after it are redone",
                    path.name,
                    obj.get("train_state", {}).get("global_step", "?"),
                    newest.name,
                )
            return path, obj
        raise CheckpointError(
            f"no usable checkpoint in {self.ckpt_dir} ({len(candidates)} tried): {problems[0]}"
        )

    def _restore(self, path: Path, obj: dict[str, Any]) -> None:
        saved_cfg = obj.get("train_config")
        changes: list[str] = []
        if saved_cfg is not None:
            try:
                changes = diff_configs(TrainingConfig.from_dict(saved_cfg), self.cfg)
            except ConfigError:
                changes = ["(saved config no longer valid)"]
            for change in changes:
                logger.warning("resumed with a changed setting: %s", change)
        try:
            self.optimizer.load_state_dict(obj["optimizer_state_dict"])
        except ValueError as exc:
            raise ConfigError(
                f"{path}: the saved optimizer state does not fit the trainable parameters "
                f"(was model.freeze_image_encoder or train.find_unused_parameters changed?): {exc}"
            ) from None
        self.scheduler.load_state_dict(obj["lr_scheduler_state_dict"])
        if any(c.startswith(("optim.", "task.layer_decay")) for c in changes):
            self._apply_optim_config()
        if obj.get("scaler_state_dict"):
            self.scaler.load_state_dict(obj["scaler_state_dict"])
        state = obj["train_state"]
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self._last_saved_step = self.global_step
        self._last_checkpoint = path
        if state.get("world_size", self.ctx.world_size) != self.ctx.world_size:
            logger.warning(
                "resuming a run saved with world size %s on %d processes: the data order of "
                "the current epoch changes",
                state.get("world_size"),
                self.ctx.world_size,
            )
        if "rng_state" in obj and self.ctx.world_size == state.get("world_size", 1):
            if self.ctx.is_main:
                _set_rng_state(obj["rng_state"])
        logger.info(
            "resumed %s at epoch %d, step %d (global step %d)",
            path,
            self.epoch,
            self.step_in_epoch,
            self.global_step,
        )

    def _apply_optim_config(self) -> None:
        """After a resume with changed ``optim.*`` keys, make them take effect.

        Learning rates are recomputed from the new base rates and milestones for the current
        epoch; weight decay and betas are set on every group. The AdamW moments are kept.
        """
        o = self.cfg.optim
        base = _group_base_lrs(o)
        if o.schedule == "cosine":
            total = max(1, self.cfg.train.epochs * self._steps_per_epoch)
            decay = _cosine_factor(self.scheduler.last_epoch, total, o.min_lr_ratio)
            self.scheduler.lr_lambdas = [  # type: ignore[attr-defined]
                (lambda step: _cosine_factor(step, total, o.min_lr_ratio))
                for _ in self.optimizer.param_groups
            ]
        else:
            self.scheduler.milestones = Counter(o.milestones)  # type: ignore[attr-defined]
            self.scheduler.gamma = o.gamma  # type: ignore[attr-defined]
            decay = o.gamma ** bisect.bisect_right(sorted(o.milestones), self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            name = group["name"]
            if "lr_exponent" in group:  # semantic: layer-wise decay
                from sammed3d.training.semantic import semantic_base_lr

                group["initial_lr"] = semantic_base_lr(self.cfg, group)
            else:
                group["initial_lr"] = base[name.removesuffix(".no_decay")]
            group["lr"] = group["initial_lr"] * decay
            group["weight_decay"] = 0.0 if name.endswith(".no_decay") else o.weight_decay
            group["betas"] = (o.betas[0], o.betas[1])
        self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- logging

    def _log(self, window: dict[str, Any], writer: Any, bar: Any) -> None:
        ctx = self.ctx
        stats = torch.cat(
            [
                torch.tensor([window["loss"], window["count"]], dtype=torch.float64),
                window["dice"].to(torch.float64),
            ]
        ).to(ctx.device)
        stats = all_reduce_mean(stats, ctx)
        count = float(stats[1])
        loss = float(stats[0]) / max(count, 1.0)
        dice = (stats[2:] / max(count, 1.0)).tolist()
        elapsed = max(time.perf_counter() - window["t0"], 1e-9)
        record = {
            "step": self.global_step,
            "epoch": self.epoch,
            "loss": loss,
            "dice": dice,
            "lr": {
                g.get("name", str(i)): g["lr"] * self._warmup_factor(self.global_step - 1)
                for i, g in enumerate(self.optimizer.param_groups)
            },
            "samples_per_second": window["samples"] * ctx.world_size / elapsed,
        }
        self.history.append(record)
        if not ctx.is_main:
            return
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if writer is not None:
            writer.add_scalar("train/loss", loss, self.global_step)
            for name, d in zip(self._dice_names, dice, strict=True):
                writer.add_scalar(f"train/{name}", d, self.global_step)
            for name, lr in record["lr"].items():
                writer.add_scalar(f"train/lr_{name}", lr, self.global_step)
            writer.add_scalar(
                "train/samples_per_second", record["samples_per_second"], self.global_step
            )
        bar.set_postfix(loss=f"{loss:.4f}", dice=f"{dice[-1]:.3f}", epoch=self.epoch)

    # ---------------------------------------------------------------- main loop

    def fit(self) -> TrainResult:
        """Run training to the end (or to ``stop_after_steps`` / SIGTERM)."""
        owns_dist = self._ctx is None
        self.ctx = self._ctx or init_distributed(self.cfg.train.device)
        ok = False
        try:
            result = self._fit()
            ok = True
            return result
        finally:
            if owns_dist:
                if ok:
                    cleanup_distributed(self.ctx)
                elif torch.distributed.is_initialized():
                    torch.distributed.destroy_process_group()

    def _install_signal_handler(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._stop_requested:
                raise KeyboardInterrupt  # a second Ctrl-C: quit now
            logger.warning(
                "received %s: checkpointing at the next step and stopping%s",
                signal.Signals(signum).name,
                " (Ctrl-C again quits at once)" if signum == signal.SIGINT else "",
            )
            self._stop_requested = True
            self.stop_signal = signal.Signals(signum)

        return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def _fit(self) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        t, r = cfg.train, cfg.run
        if not ctx.is_main:
            logging.getLogger("sammed3d").setLevel(logging.WARNING)
        resume_ckpt = self._check_run_dir()
        autocast_dtype = resolve_amp(t.amp, ctx.device)
        if self._dataset is None:
            _check_roots(cfg)  # before building a model or a cache
        barrier(ctx)  # every rank has checked the run folder before anything is written

        resume = None if resume_ckpt is None else self._load_resume_or_older(resume_ckpt)
        resume_ckpt = None if resume is None else resume[0]
        model = self._build_model(resume)
        torch.manual_seed(t.seed + ctx.rank)
        np.random.seed((t.seed + ctx.rank) % 2**32)
        random.seed(t.seed + ctx.rank)
        self._freeze(model)
        model.to(ctx.device).train()
        self.optimizer = self._build_optimizer(model)
        self.scaler = make_grad_scaler(ctx.device, enabled=autocast_dtype == torch.float16)

        dataset = self._build_dataset(ctx)
        samples_per_rank = per_rank_samples(len(dataset), ctx.world_size)  # type: ignore[arg-type]
        n_steps = steps_per_epoch(samples_per_rank, t.batch_size, t.accumulation_steps)
        if n_steps == 0:
            raise ConfigError(
                f"{len(dataset)} training targets are too few for one optimizer step: "  # type: ignore[arg-type]
                f"need batch_size x accumulation_steps x world_size = "
                f"{t.batch_size * t.accumulation_steps * ctx.world_size}"
            )
        self._steps_per_epoch = n_steps
        self.scheduler = self._build_scheduler(n_steps)
        if resume is not None:
            self._restore(*resume)
            resume = None  # free the CPU copy of the checkpoint
        generated = _find_generated(dataset)
        sampler = EpochDistributedSampler(
            dataset,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=t.seed,
            limit=n_steps * t.accumulation_steps * t.batch_size,
        )
        loader_kwargs: dict[str, Any] = {}
        if cfg.data.num_workers > 0:
            # workers are stateless (samples depend only on their keys), so they can persist;
            # a stop signal sent to the whole process group (a scheduler, Ctrl-C) is left to
            # the main process, which checkpoints first (a worker that died of it would abort)
            loader_kwargs.update(
                persistent_workers=True, prefetch_factor=2, worker_init_fn=_leave_stop_to_main
            )
        loader = DataLoader(
            dataset,
            batch_size=t.batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=ctx.device.type == "cuda",
            drop_last=True,
            **loader_kwargs,
        )

        if self.semantic:
            from sammed3d.training.semantic import SemanticStep

            classes = model.spec.classes  # type: ignore[attr-defined]
            self._dice_names = [f"dice_{c}" for c in classes]
            loop: nn.Module = SemanticStep(model, autocast_dtype=autocast_dtype)  # type: ignore[arg-type]
        else:
            self._dice_names = [f"dice_click_{i + 1:02d}" for i in range(t.num_clicks)]
            loop = ClickLoop(
                model,
                num_clicks=t.num_clicks,
                click_threshold=t.click_threshold,
                accumulate_clicks=t.accumulate_clicks,
                detach_mask_prompt=t.detach_mask_prompt,
                freeze_image_encoder=cfg.model.freeze_image_encoder,
                autocast_dtype=autocast_dtype,
                loss_resolution=t.loss_resolution,
                first_click_weight=t.first_click_weight,
                center_click_fraction=t.center_click_fraction,
            )
        if ctx.distributed:
            ddp_kwargs: dict[str, Any] = {"broadcast_buffers": False}
            ddp_params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
            if "forward_sync_buffers" in ddp_params:  # newer torch: same meaning, no warning
                ddp_kwargs = {"forward_sync_buffers": False}
            loop = nn.parallel.DistributedDataParallel(
                loop,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=t.find_unused_parameters,
                **ddp_kwargs,
            )
        self.loop = loop

        writer = None
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            self._trim_log()
            if r.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # on resume, drop events logged after the checkpoint (they are redone)
                writer = SummaryWriter(
                    log_dir=str(self.run_dir / "tensorboard"),
                    purge_step=self.global_step + 1 if resume_ckpt is not None else None,
                )
        total_steps = t.epochs * n_steps
        logger.info(
            "training %s: %d targets, %d process(es) on %s, global batch %d, %d steps/epoch, "
            "%d epochs, amp=%s",
            cfg.model.name,
            len(dataset),  # type: ignore[arg-type]
            ctx.world_size,
            ctx.device,
            t.batch_size * t.accumulation_steps * ctx.world_size,
            n_steps,
            t.epochs,
            autocast_dtype or "fp32",
        )
        previous_handlers = self._install_signal_handler()
        bar = tqdm(
            total=total_steps,
            initial=self.global_step,
            desc="train",
            unit="step",
            disable=not (self.show_progress and ctx.is_main),
            dynamic_ncols=True,
        )
        run_t0 = time.perf_counter()
        self._last_save_time = run_t0
        run_samples = 0
        steps_this_run = 0
        #: semantic runs: crops of this run that contained each class (this rank)
        class_crops = torch.zeros(len(self._dice_names), dtype=torch.float64)
        stopped = False
        try:
            while self.epoch < t.epochs and not stopped:
                sampler.set_epoch(self.epoch)
                sampler.set_start(self.step_in_epoch * t.accumulation_steps * t.batch_size)
                window = self._new_window(len(self._dice_names))
                micro = self.step_in_epoch * t.accumulation_steps
                for batch in loader:
                    last_micro = (micro + 1) % t.accumulation_steps == 0
                    if "synth_seed" in batch:  # generated on the training device
                        assert generated is not None
                        image, label = generated.draw(
                            batch["synth_seed"], batch["source"], ctx.device
                        )
                    else:
                        image = batch["image"].to(ctx.device, non_blocking=True)
                        label = batch["label"].to(ctx.device, non_blocking=True)
                    seeds = batch["seed"]
                    if cfg.data.normalization == "per_batch":
                        image = batch_zscore(image)
                    mask_only = mask_only_iterations(
                        t.num_clicks,
                        t.mask_only_random,
                        t.mask_only_last,
                        step_rng(t.seed, self.epoch, micro),
                    )
                    with maybe_no_sync(loop, skip_sync=not last_micro):
                        out = loop(image, label, seeds, mask_only)
                        loss = out["loss"]
                        # fp16: the GradScaler skips steps with inf/NaN gradients instead
                        if not self.scaler.is_enabled() and not torch.isfinite(loss):
                            raise FloatingPointError(
                                f"non-finite loss {loss.item()} at epoch {self.epoch}, global "
                                f"step {self.global_step} (lower optim.lr or use train.amp=bf16)"
                            )
                        self.scaler.scale(loss / t.accumulation_steps).backward()
                    window["loss"] += float(loss.detach())
                    window["dice"] += out["dice"].detach().cpu().double()
                    window["count"] += 1
                    window["samples"] += image.shape[0]
                    run_samples += image.shape[0]
                    if "class_crops" in out:
                        class_crops += out["class_crops"].detach().cpu().double()
                    micro += 1
                    if not last_micro:
                        continue
                    self._optimizer_step(model)
                    if cfg.optim.schedule == "cosine":
                        self.scheduler.step()
                    self.global_step += 1
                    self.step_in_epoch += 1
                    steps_this_run += 1
                    bar.update(1)
                    if self.global_step % r.log_every_steps == 0:
                        self._log(window, writer, bar)
                        window = self._new_window(len(self._dice_names))
                    stop = r.stop_after_steps is not None and steps_this_run >= r.stop_after_steps
                    if r.stop_after_minutes is not None:
                        stop = stop or time.perf_counter() - run_t0 >= 60 * r.stop_after_minutes
                    stop = any_rank(stop or self._stop_requested, ctx)
                    due = r.save_every_minutes is not None and (
                        time.perf_counter() - self._last_save_time >= 60 * r.save_every_minutes
                    )
                    due = any_rank(due, ctx) if r.save_every_minutes is not None else False
                    if stop or due or self.global_step % r.save_every_steps == 0:
                        self._save()
                    if stop:
                        stopped = True
                        break
                if stopped:
                    break
                self.epoch += 1
                self.step_in_epoch = 0
                if cfg.optim.schedule == "multistep":
                    self.scheduler.step()
                if r.save_every_epoch and self.epoch < t.epochs:
                    self._save()
            finished = self.epoch >= t.epochs
            already_final = (
                self._last_checkpoint is not None
                and self._last_checkpoint.name == FINAL_NAME
                and self._last_saved_step == self.global_step
            )
            if finished and not already_final:
                self._save(final=True)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            for sig, previous in (previous_handlers or {}).items():
                signal.signal(sig, previous)
        elapsed = time.perf_counter() - run_t0
        throughput = run_samples * ctx.world_size / elapsed if run_samples else None
        crops_seen: dict[str, int] | None = None
        if self.semantic:
            totals = (
                all_reduce_mean(
                    torch.cat(
                        [class_crops, torch.tensor([float(run_samples)], dtype=torch.float64)]
                    ).to(ctx.device),
                    ctx,
                ).cpu()
                * ctx.world_size
            )
            from sammed3d.training.semantic import absent_class_message

            classes = list(unwrap(self.loop).model.spec.classes)  # type: ignore[union-attr]
            crops_seen = {c: round(float(v)) for c, v in zip(classes, totals[:-1], strict=True)}
            message = absent_class_message(
                classes, totals[:-1].tolist(), round(float(totals[-1])),
                cfg.task.foreground_fraction,
            )  # fmt: skip
            if message and ctx.is_main:
                logger.warning(message)
        peak = _peak_memory_mb(ctx.device)
        result = TrainResult(
            run_dir=self.run_dir,
            checkpoint=self._last_checkpoint,
            global_step=self.global_step,
            epoch=self.epoch,
            finished=finished,
            last_loss=self.history[-1]["loss"] if self.history else None,
            samples_per_second=throughput,
            peak_memory_mb=peak,
            history=self.history,
        )
        barrier(ctx)  # every rank reached the end before the summary says so
        if ctx.is_main:
            _atomic_write_json(
                {
                    "status": "finished" if finished else "stopped",
                    "global_step": self.global_step,
                    "epoch": self.epoch,
                    "checkpoint": str(self._last_checkpoint) if self._last_checkpoint else None,
                    "world_size": ctx.world_size,
                    "device": str(ctx.device),
                    "samples_per_second": throughput,
                    "peak_memory_mb": peak,
                    "last_loss": result.last_loss,
                    **({} if crops_seen is None else {"class_crops": crops_seen}),
                },
                self.run_dir / "summary.json",
            )
        logger.info(
            "%s at epoch %d, global step %d; checkpoint %s",
            "finished" if finished else "stopped",
            self.epoch,
            self.global_step,
            self._last_checkpoint,
        )
        return result

    def _trim_log(self) -> None:
        """Keep only ``log.jsonl`` lines up to the restored step (all of them on a fresh run)."""
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= self.global_step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
        os.replace(tmp, path)

    @staticmethod
    def _new_window(num_clicks: int) -> dict[str, Any]:
        return {
            "loss": 0.0,
            "dice": torch.zeros(num_clicks, dtype=torch.float64),
            "count": 0,
            "samples": 0,
            "t0": time.perf_counter(),
        }

    def _warmup_factor(self, step: int) -> float:
        """Learning-rate factor of optimizer step ``step`` (0-based) during linear warm-up."""
        warmup = self.cfg.optim.warmup_steps
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

    def _optimizer_step(self, model: Sam3D) -> None:
        clip = self.cfg.optim.grad_clip
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        factor = self._warmup_factor(self.global_step)
        scheduled = [g["lr"] for g in self.optimizer.param_groups]
        if factor != 1.0:  # scale for this step only; the scheduler keeps the plain rates
            for group, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr * factor
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if factor != 1.0:
            for group, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr


def _group_base_lrs(o: Any) -> dict[str, float]:
    """Base learning rate of each top-level module (the optimizer's parameter groups)."""
    decoder = o.lr * o.decoder_lr_scale
    return {
        "image_encoder": o.lr,
        "hires_encoder": o.lr,
        "prompt_encoder": decoder,
        "mask_decoder": decoder,
    }


def _no_decay_names(module: nn.Module) -> set[str]:
    """Parameters that get no weight decay: biases and other 1-D parameters (norm weights,
    scalars), embeddings (``nn.Embedding``) and position tables (``pos_embed``, ``rel_pos_*``)."""
    names = {n for n, p in module.named_parameters() if p.ndim <= 1}
    names |= {n for n, _ in module.named_parameters() if "pos_embed" in n or "rel_pos" in n}
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.Embedding):
            names.add(f"{prefix}.weight" if prefix else "weight")
    return names


def _cosine_factor(step: int, total: int, min_ratio: float) -> float:
    """Cosine decay from 1 at step 0 to ``min_ratio`` at step ``total`` (then constant)."""
    progress = min(max(step, 0) / total, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _find_generated(dataset: Any) -> Any:
    """The deferred :class:`GeneratedDataset` inside ``dataset`` (or None)."""
    from sammed3d.training.synthesis import GeneratedDataset

    parts = getattr(dataset, "datasets", [dataset])
    for part in parts:
        if isinstance(part, GeneratedDataset) and part.defer:
            return part
    return None


def _config_diff(got: Any, expected: Any) -> str:
    a, b = got.to_dict(), expected.to_dict()
    diffs = [f"{k}={a[k]!r} (expected {b[k]!r})" for k in a if a[k] != b.get(k)]
    return ", ".join(diffs[:6]) or "(configs differ)"


def _check_roots(cfg: TrainingConfig) -> None:
    if not cfg.data.roots and cfg.data.synthetic_per_epoch > 0:
        return
    if not cfg.data.roots:
        raise ConfigError(
            "data.roots is empty: give the dataset folders, e.g. data.roots=[/data/Dataset001_X]"
        )
    for root in cfg.data.roots:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root} (data.roots)")


def build_generated_dataset(cfg: TrainingConfig) -> Dataset[dict[str, torch.Tensor]]:
    """The on-the-fly synthetic crops of ``cfg.data`` (``synthetic_per_epoch`` per epoch)."""
    from sammed3d.training.synthesis import GeneratedDataset, SynthesisConfig

    d = cfg.data
    for path in (d.shape_bank, d.anatomy):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"file not found: {path} (data.shape_bank / data.anatomy)")
    size = get_config(cfg.model.name).img_size
    return GeneratedDataset(
        d.synthetic_per_epoch,
        SynthesisConfig(size=size),
        seed=cfg.train.seed,
        shape_bank=d.shape_bank,
        defer=d.generate_on_device,
        targets=d.targets_per_crop,
        anatomy=d.anatomy,
        anatomy_fraction=d.anatomy_fraction,
    )


def build_training_dataset(
    cfg: TrainingConfig, ctx: DistContext | None = None, *, show_progress: bool = True
) -> CachedTargetDataset:
    """Discover the targets of ``cfg.data.roots``, build/reuse the cache and return the dataset.

    Cache building is split across the processes of each node (call on every rank), so it also
    works with a node-local ``cache_dir``; rank 0 writes ``manifest.jsonl``.

    Raises:
        ConfigError: no ``data.roots``.
        FileNotFoundError / ValueError: from dataset discovery or pre-processing.
    """
    from sammed3d.data.layout import discover_dataset, iter_targets

    ctx = ctx or DistContext()
    d = cfg.data
    _check_roots(cfg)
    targets = []
    for root in d.roots:
        targets += iter_targets(discover_dataset(root, split=d.split))
    cache_dir = Path(d.cache_dir) if d.cache_dir else Path(cfg.run.output_dir) / "cache"
    params = CacheParams(
        target_spacing=(d.target_spacing[0], d.target_spacing[1], d.target_spacing[2]),
        ct_clamp=None if d.ct_clamp is None else (d.ct_clamp[0], d.ct_clamp[1]),
    )
    logger.info("pre-processing cache for %d targets in %s", len(targets), cache_dir)
    root = build_cache(
        targets,
        cache_dir,
        params,
        rank=ctx.local_rank,
        world_size=ctx.local_world_size,
        show_progress=show_progress and ctx.is_main,
    )
    barrier(ctx)
    kept = load_cached_targets(
        targets, root, min_target_voxels=d.min_target_voxels, write_manifest=ctx.is_main
    )
    if len(kept) < len(targets):
        logger.info(
            "kept %d of %d targets (see %s)", len(kept), len(targets), root / "manifest.jsonl"
        )
    if not kept:
        raise ValueError(
            f"all {len(targets)} targets were dropped (fewer than data.min_target_voxels="
            f"{d.min_target_voxels} voxels); see {root / 'manifest.jsonl'}"
        )
    crop = get_config(cfg.model.name).img_size
    return CachedTargetDataset(
        kept,
        crop,
        seed=cfg.train.seed,
        random_shift=d.random_shift,
        aug=AugmentConfig(
            flip_prob=d.flip_prob,
            intensity_aug_prob=d.intensity_aug_prob,
            normalize=d.normalization == "per_sample",
        ),
    )


__all__ = [
    "NEVER_TRAINED_PREFIXES",
    "TrainResult",
    "Trainer",
    "build_training_dataset",
    "find_latest_checkpoint",
    "make_grad_scaler",
    "never_trained_parameters",
    "resolve_amp",
    "train",
]
