"""The training loop: the published click-simulation regime, DDP, AMP and resumable runs.

Example:
    >>> from sammed3d.training import load_config, train
    >>> cfg = load_config("finetune_turbo", ["data.roots=[/data/Dataset001_Foo]",
    ...                                      "model.init_checkpoint=sam_med3d_turbo.pth"])
    >>> result = train(cfg)                 # or: torchrun --nproc_per_node 8 -m sammed3d train ...
    >>> result = train(cfg, resume=True)    # continue an interrupted run in cfg.run.output_dir

Run folder (``run.output_dir``)::

    config.yaml                 the resolved config
    checkpoints/step_XXXXXXXX.pth, final.pth, latest.json   (sammed3d.training.checkpoint)
    log.jsonl                   one line per logged step (loss, Dice per click, LR, samples/s)
    tensorboard/                TensorBoard scalars
    summary.json                status, steps, throughput, peak memory (written at the end)

The pieces live next to this module: the data (``training.data``: :func:`build_dataset`), the
optimizer and its one learning-rate rule (``training.optim``), the checkpoints and resume
(``training.checkpoint``), the click loop (``training.interaction``). Checkpoints hold
``model_state_dict`` (published key names), ``model_config``, ``metadata`` and the training state
(optimizer, scheduler, grad scaler, data position, RNG states and the resolved config). They load
with ``sammed3d.load_checkpoint`` and ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import random
import resource
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sammed3d.build import CheckpointError, build_model, get_config, model_config_of
from sammed3d.config import BEHAVIOUR_FIELDS, ModelConfig
from sammed3d.io import atomic_write_text
from sammed3d.modeling import Sam3D
from sammed3d.training.checkpoint import (
    FINAL_NAME,
    check_run_folder,
    find_latest_checkpoint,
    load_resume_checkpoint,
    restore_training_state,
    resumed_model,
    rng_state,
    save_training_checkpoint,
    step_checkpoint_name,
)
from sammed3d.training.config import ConfigError, TrainingConfig, save_config
from sammed3d.training.data import (
    EpochDistributedSampler,
    batch_zscore,
    build_dataset,
    build_training_dataset,
    check_data_roots,
    deferred_generator,
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
from sammed3d.training.multimask import seed_multimask_outputs
from sammed3d.training.optim import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)

#: Parameters the published regime never trains: ``train.py`` has no IoU loss, always passes a
#: mask prompt and decodes mask 0 only. They are frozen, so DDP needs no
#: ``find_unused_parameters`` (AdamW skips parameters without gradients anyway). Hypernetwork
#: MLPs 1-3 are added by :func:`never_trained_parameters`.
NEVER_TRAINED_PREFIXES = ("mask_decoder.iou_prediction_head.", "prompt_encoder.no_mask_embed.")


def never_trained_parameters(model: Sam3D, first_click_multimask: bool = False) -> list[str]:
    """Names of the parameters that get no gradient in the published regime.

    The IoU head, ``no_mask_embed`` and the hypernetwork MLPs of masks 1..3 (only mask 0 is
    decoded with ``multimask_output=False``). With ``first_click_multimask``
    (``train.first_click_multimask``) the IoU head and masks 1..3 are trained, leaving
    ``no_mask_embed``.
    """
    if first_click_multimask:
        prefixes: tuple[str, ...] = ("prompt_encoder.no_mask_embed.",)
    else:
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
            (model, optimizer, grad scaler, data position, RNG; the learning rate follows
            from the config and the step).
        dataset: Use this dataset instead of the configured one (items: ``image``/``label``
            ``(1, S, S, S)``, ``seed``; indexed by the ``(epoch, index)`` keys of
            :class:`~sammed3d.training.data.EpochDistributedSampler`).
        show_progress: tqdm progress bar on rank 0.

    Returns:
        A :class:`TrainResult` (on every rank).

    Raises:
        FileNotFoundError: missing init checkpoint, dataset root or resume checkpoint.
        CheckpointError: an init/resume checkpoint that cannot be read or does not fit the
            configured model (the same one-line messages as every loader).
        ConfigError: an invalid setting for this machine (e.g. fp16 on CPU) or a run folder that
            already holds checkpoints without ``resume``.
    """
    trainer = Trainer(config, resume=resume, dataset=dataset, show_progress=show_progress)
    return trainer.fit()


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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


@dataclass
class _Run:
    """What one invocation of :meth:`Trainer.fit` works with (built by ``Trainer._setup``)."""

    model: nn.Module  # the model being trained (SAM-Med3D or task model)
    loop: nn.Module  # the (DDP-wrapped) ClickLoop / SemanticStep around it
    sampler: EpochDistributedSampler
    loader: DataLoader[Any]
    generated: Any  # a GeneratedDataset drawing crops on the device, or None
    autocast_dtype: torch.dtype | None
    resumed: bool
    writer: Any = None  # TensorBoard SummaryWriter (rank 0)
    bar: Any = None
    window: dict[str, Any] = field(default_factory=dict)  # the current logging window
    t0: float = field(default_factory=time.perf_counter)
    samples: int = 0  # this rank's samples of this invocation
    steps: int = 0  # optimizer steps of this invocation
    #: semantic runs: crops of this invocation that contained each class (this rank)
    class_crops: torch.Tensor | None = None


def _init_hint(init: str, allow_unsafe_pickle: bool) -> str:
    """``; it is a sam_med3d_demo: ...`` for an ``--init`` file of another registered
    architecture than ``model.name``: the config (or the key) that fits it; empty when the
    file names no registered architecture."""
    from sammed3d.build import infer_config, read_checkpoint, registered_names
    from sammed3d.training.config import finetune_fit

    try:
        ckpt = read_checkpoint(init, allow_unsafe_pickle=allow_unsafe_pickle)
        config = ckpt.config if ckpt.config is not None else infer_config(ckpt.state_dict)
    except (OSError, ValueError):  # CheckpointError is a ValueError
        return ""
    names = registered_names(config)
    if not names:
        return ""
    return f"; it is a {names[0]}: fine-tune it with {finetune_fit(names[0])}"


def _behaviours_beyond(cfg: ModelConfig, base: ModelConfig) -> str:
    """``zoom_spacing=1.0, first_pick=edges``: the behaviours of ``cfg`` (fields that change
    no shape) that differ from ``base``, for the log; empty when none does."""
    return ", ".join(
        f"{n}={getattr(cfg, n)}" for n in BEHAVIOUR_FIELDS if getattr(cfg, n) != getattr(base, n)
    )


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
        self.global_step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False
        #: The stop signal received (SIGTERM or SIGINT), if any.
        self.stop_signal: signal.Signals | None = None
        self._last_saved_step = -1
        self._last_checkpoint: Path | None = None
        self._last_save_time = time.perf_counter()
        #: Learning rate of each group at the last optimizer step (for the log).
        self._step_lrs: dict[str, float] = {}

    @property
    def semantic(self) -> bool:
        """``task.kind=semantic``: a task model (``sammed3d.training.semantic``)."""
        return self.cfg.task.kind == "semantic"

    # ---------------------------------------------------------------- setup

    def _setup(self) -> _Run:
        """Check the run folder, build model, optimizer, data and step module, restore a
        resumed run's state, open the outputs."""
        cfg, ctx, t = self.cfg, self.ctx, self.cfg.train
        if not ctx.is_main:
            logging.getLogger("sammed3d").setLevel(logging.WARNING)
        newest = check_run_folder(self.run_dir, self.resume)
        autocast_dtype = resolve_amp(t.amp, ctx.device)
        if self._dataset is None:
            check_data_roots(cfg)  # before building a model or a cache
        barrier(ctx)  # every rank has checked the run folder before anything is written

        resume = None if newest is None else load_resume_checkpoint(self.run_dir, newest)
        model = self._build_model(resume)
        torch.manual_seed(t.seed + ctx.rank)
        np.random.seed((t.seed + ctx.rank) % 2**32)
        random.seed(t.seed + ctx.rank)
        self._freeze(model)
        model.to(ctx.device).train()
        self.optimizer = build_optimizer(model, cfg)
        self.scaler = make_grad_scaler(ctx.device, enabled=autocast_dtype == torch.float16)

        dataset, n_steps = self._training_data()
        self._steps_per_epoch = n_steps
        if resume is not None:
            path, obj = resume
            resume = None  # free the CPU copy of the checkpoint after the restore
            pos = restore_training_state(
                path, obj, cfg, self.optimizer, self.scaler, ctx, total_steps=t.epochs * n_steps
            )
            del obj
            self.epoch, self.step_in_epoch = pos.epoch, pos.step_in_epoch
            self.global_step = self._last_saved_step = pos.global_step
            self._last_checkpoint = path
        self.scheduler = build_scheduler(
            self.optimizer,
            cfg,
            total_steps=t.epochs * n_steps,
            start_step=self.global_step,
            epoch_of_step=self._epoch_of_step,
        )
        sampler, loader = self._make_loader(dataset, n_steps)
        run = _Run(
            model=model,
            loop=self._make_step_module(model, autocast_dtype),
            sampler=sampler,
            loader=loader,
            generated=deferred_generator(dataset),
            autocast_dtype=autocast_dtype,
            resumed=newest is not None,
        )
        self.loop = run.loop
        self._open_outputs(run)
        logger.info(
            "training %s, %d process(es) on %s, global batch %d, %d step%s/epoch, %d epoch%s, "
            "amp=%s",
            self._describe_data(model, dataset),
            ctx.world_size,
            ctx.device,
            t.batch_size * t.accumulation_steps * ctx.world_size,
            n_steps,
            "" if n_steps == 1 else "s",
            t.epochs,
            "" if t.epochs == 1 else "s",
            autocast_dtype or "fp32",
        )
        warmup, total = cfg.optim.warmup_steps, t.epochs * n_steps
        if newest is None and 0 < total <= 2 * warmup:
            logger.warning(
                "optim.warmup_steps=%d for a run of %d steps: the learning rate %s; lower "
                "optim.warmup_steps (e.g. %d) or train longer",
                warmup,
                total,
                "never reaches optim.lr"
                if total <= warmup
                else "warms up over half of the run or more",
                max(total // 10, 1),
            )
        if newest is not None and self.epoch >= t.epochs:
            logger.warning(
                "this run has already finished its %d epoch%s: nothing to train; to train "
                "on, resume with a larger train.epochs (e.g. train.epochs=%d)",
                t.epochs,
                "" if t.epochs == 1 else "s",
                t.epochs * 2,
            )
        stop = cfg.run.stop_after_steps
        if stop is not None:
            steps = self._steps_this_invocation()
            logger.info(
                "run.stop_after_steps=%d: this invocation runs %d step(s), from step %d to %d",
                stop,
                steps,
                self.global_step,
                self.global_step + steps,
            )
        return run

    def _describe_data(self, model: nn.Module, dataset: Dataset[Any]) -> str:
        """What is trained on what, for the start line: ``sam_med3d_demo: 250 targets`` or
        ``task model (3 classes: a, b, c) on the sam_med3d_demo encoder: 250 crops/epoch from
        12 cases``."""
        size = len(dataset)  # type: ignore[arg-type]
        if not self.semantic:
            return f"{self.cfg.model.name}: {size} target{'' if size == 1 else 's'}"
        classes = list(model.spec.classes)  # type: ignore[attr-defined]
        cases = getattr(dataset, "cases", None)
        source = "" if cases is None else f" from {len(cases)} cases"
        return (
            f"task model ({len(classes)} classes: {', '.join(classes)}) on the "
            f"{self.cfg.model.name} encoder: {size} crops/epoch{source}"
        )

    def _steps_this_invocation(self) -> int:
        """Optimizer steps this invocation will run: to the end of the last epoch, or
        ``run.stop_after_steps`` of them if that comes first (a time limit or a signal may
        stop it earlier)."""
        left = max(self._total_steps() - self.global_step, 0)
        stop = self.cfg.run.stop_after_steps
        return left if stop is None else min(left, stop)

    def _training_data(self) -> tuple[Dataset[dict[str, torch.Tensor]], int]:
        """The dataset (given or configured) and its optimizer steps per epoch.

        Raises:
            ConfigError: too few samples for one optimizer step.
        """
        ctx, t = self.ctx, self.cfg.train
        dataset = self._dataset
        if dataset is None:
            dataset = build_dataset(self.cfg, ctx, show_progress=self.show_progress)
        size = len(dataset)  # type: ignore[arg-type]
        n_steps = steps_per_epoch(
            per_rank_samples(size, ctx.world_size), t.batch_size, t.accumulation_steps
        )
        if n_steps == 0:
            raise ConfigError(
                f"{size} training {'crops' if self.semantic else 'targets'} are too few for one "
                "optimizer step: "
                f"need batch_size x accumulation_steps x world_size = "
                f"{t.batch_size * t.accumulation_steps * ctx.world_size}"
            )
        return dataset, n_steps

    def _build_model(self, resume: tuple[Path, dict[str, Any]] | None) -> Sam3D:
        """The model: a resumed run's weights, ``model.init_checkpoint`` (read by
        :func:`~sammed3d.build.build_model`, like every loader), or a random start."""
        if self.semantic:
            from sammed3d.training.semantic import build_task_model

            return build_task_model(self.cfg, resume)  # type: ignore[return-value]
        model = self._load_model(resume)
        multimask = self.cfg.train.first_click_multimask
        if multimask and resume is None and self.cfg.model.init_checkpoint:
            if not model.first_click_multimask:  # outputs 1..3 never trained: start from mask 0
                seed_multimask_outputs(
                    model, torch.Generator().manual_seed(self.cfg.train.seed + 1)
                )
        cfg = dataclasses.replace(model_config_of(model), first_click_multimask=multimask)
        negative = self.cfg.model.negative_click_similarity
        if negative is not None:
            if not (cfg.click_maps and cfg.hires_channels):
                raise ConfigError(
                    "model.negative_click_similarity needs a model with click maps and a "
                    f"high-res path (e.g. sam_med3d_demo); {self.cfg.model.name} lacks them"
                )
            cfg = dataclasses.replace(cfg, negative_click_similarity=negative)
        model.config = cfg  # type: ignore[assignment]
        return model

    def _load_model(self, resume: tuple[Path, dict[str, Any]] | None) -> Sam3D:
        m = self.cfg.model
        expected = get_config(m.name)
        torch.manual_seed(self.cfg.train.seed)  # identical initial weights on every rank
        if resume is not None:  # already read in full (optimizer state and all)
            return resumed_model(*resume, m.name)
        if m.init_checkpoint:
            try:  # a file, or a published name such as "turbo" (fetched and verified)
                model = build_model(
                    expected, m.init_checkpoint, allow_unsafe_pickle=m.allow_unsafe_pickle
                )
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"init {exc}") from None
            except CheckpointError as exc:
                hint = _init_hint(m.init_checkpoint, m.allow_unsafe_pickle)
                if not hint:
                    raise
                raise CheckpointError(f"{exc}{hint}") from None
            kept = _behaviours_beyond(model_config_of(model), expected)
            logger.info(
                "initialised from %s%s",
                m.init_checkpoint,
                f" (its inference settings kept: {kept})" if kept else "",
            )
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
        never = (
            set()
            if t.find_unused_parameters
            else set(never_trained_parameters(model, t.first_click_multimask))
        )
        for name, p in model.named_parameters():
            if name in never:
                p.requires_grad_(False)
            if self.cfg.model.freeze_image_encoder and name.startswith("image_encoder."):
                p.requires_grad_(False)

    def _epoch_of_step(self, step: int) -> int:
        """The epoch of optimizer step ``step`` for the learning-rate schedule.

        The scheduler asks only for the next step (``step == global_step``: when it is built
        and after every optimizer step); that step opens the next epoch once this one has had
        all its steps (the loop closes an epoch when its sampler is exhausted).
        """
        return self.epoch + (1 if self.step_in_epoch >= self._steps_per_epoch else 0)

    def _make_loader(
        self, dataset: Dataset[dict[str, torch.Tensor]], n_steps: int
    ) -> tuple[EpochDistributedSampler, DataLoader[Any]]:
        cfg, ctx, t = self.cfg, self.ctx, self.cfg.train
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
        return sampler, loader

    def _make_step_module(self, model: Sam3D, autocast_dtype: torch.dtype | None) -> nn.Module:
        """The module one micro-batch runs through (click loop or task step), DDP-wrapped."""
        cfg, ctx, t = self.cfg, self.ctx, self.cfg.train
        if self.semantic:
            from sammed3d.training.semantic import SemanticStep

            classes = model.spec.classes  # type: ignore[attr-defined]
            self._dice_names = [f"dice_{c}" for c in classes]
            self._dice_labels = list(classes)
            loop: nn.Module = SemanticStep(model, autocast_dtype=autocast_dtype)  # type: ignore[arg-type]
        else:
            self._dice_names = [f"dice_click_{i + 1:02d}" for i in range(t.num_clicks)]
            self._dice_labels = [f"click {i + 1}" for i in range(t.num_clicks)]
            loop = build_click_loop(model, cfg, autocast_dtype=autocast_dtype)
        if not ctx.distributed:
            return loop
        ddp_kwargs: dict[str, Any] = {"broadcast_buffers": False}
        ddp_params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
        if "forward_sync_buffers" in ddp_params:  # newer torch: same meaning, no warning
            ddp_kwargs = {"forward_sync_buffers": False}
        return nn.parallel.DistributedDataParallel(
            loop,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=t.find_unused_parameters,
            **ddp_kwargs,
        )

    def _open_outputs(self, run: _Run) -> None:
        """Rank 0: the run folder, ``config.yaml``, ``log.jsonl`` trimmed to the restored
        step, TensorBoard; every rank: the progress bar and the per-class crop counters."""
        r = self.cfg.run
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self._trim_log()
            if r.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # on resume, drop events logged after the checkpoint (they are redone)
                run.writer = SummaryWriter(
                    log_dir=str(self.run_dir / "tensorboard"),
                    purge_step=self.global_step + 1 if run.resumed else None,
                )
        # with a step limit: the steps of this invocation; else the run's, from where it is
        limited = r.stop_after_steps is not None
        run.bar = tqdm(
            total=self._steps_this_invocation() if limited else self._total_steps(),
            initial=0 if limited else self.global_step,
            desc="train",
            unit="step",
            disable=not (self.show_progress and self.ctx.is_main),
            dynamic_ncols=True,
        )
        run.class_crops = torch.zeros(len(self._dice_names), dtype=torch.float64)

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run: ``train.epochs`` x steps per epoch."""
        return self.cfg.train.epochs * self._steps_per_epoch

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
        atomic_write_text(path, "".join(x + "\n" for x in keep))

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
        path = save_training_checkpoint(
            unwrap(self.loop).model,  # type: ignore[arg-type]
            self.run_dir,
            FINAL_NAME if final else step_checkpoint_name(self.global_step),
            metadata={
                "epoch": self.epoch,
                "global_step": self.global_step,
                "finished": final,
                "run_dir": str(self.run_dir),
                "source": "sammed3d.training",
                # provenance that export keeps: what the run started from, what it saw
                "init_checkpoint": self.cfg.model.init_checkpoint,
                "data_roots": list(self.cfg.data.roots),
            },
            state={
                "epoch": self.epoch,
                "optimizer_state_dict": self.optimizer.state_dict(),
                "lr_scheduler_state_dict": self.scheduler.state_dict(),
                "scaler_state_dict": self.scaler.state_dict(),
                "train_state": self._train_state(),
                "rng_state": rng_state(),
                "train_config": self.cfg.to_dict(),
            },
            keep_last=self.cfg.run.keep_last,
            task=self.semantic,
        )
        self._last_saved_step = self.global_step
        self._last_checkpoint = path
        self._last_save_time = time.perf_counter()
        logger.debug("saved %s", path)
        return path

    # ---------------------------------------------------------------- logging

    @staticmethod
    def _new_window(num_clicks: int) -> dict[str, Any]:
        return {
            "loss": 0.0,
            "dice": torch.zeros(num_clicks, dtype=torch.float64),
            "count": 0,
            "samples": 0,
            "t0": time.perf_counter(),
        }

    def _log(self, run: _Run) -> None:
        ctx, window = self.ctx, run.window
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
            "dice_names": list(self._dice_labels),
            "lr": dict(self._step_lrs),
            "samples_per_second": window["samples"] * ctx.world_size / elapsed,
        }
        self.history.append(record)
        if not ctx.is_main:
            return
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if run.writer is not None:
            w = run.writer
            w.add_scalar("train/loss", loss, self.global_step)
            for name, d in zip(self._dice_names, dice, strict=True):
                w.add_scalar(f"train/{name}", d, self.global_step)
            for name, lr in record["lr"].items():
                w.add_scalar(f"train/lr_{name}", lr, self.global_step)
            w.add_scalar("train/samples_per_second", record["samples_per_second"], self.global_step)
        run.bar.set_postfix(self._bar_postfix(loss, dice))

    def _bar_postfix(self, loss: float, dice: list[float]) -> dict[str, Any]:
        """The progress bar's values: the loss, the mean Dice over the classes (semantic) or
        the Dice after the last click (interactive), the epoch."""
        if self.semantic:
            key = f"dice(mean of {len(dice)} classes)"
            value = sum(dice) / len(dice)
        else:
            key, value = f"dice(click {len(dice)})", dice[-1]
        return {"loss": f"{loss:.4f}", key: f"{value:.3f}", "epoch": self.epoch}

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
        run = self._setup()
        previous_handlers = self._install_signal_handler()
        run.t0 = self._last_save_time = time.perf_counter()
        try:
            finished = self._run_epochs(run)
        finally:
            run.bar.close()
            if run.writer is not None:
                run.writer.close()
            for sig, previous in (previous_handlers or {}).items():
                signal.signal(sig, previous)
        return self._finish(run, finished)

    def _run_epochs(self, run: _Run) -> bool:
        """Train from the current position to the last epoch (then write ``final.pth``) or to a
        stop (with a checkpoint). Returns whether all epochs are done."""
        finished = self._train_epochs(run)
        already_final = (
            self._last_checkpoint is not None
            and self._last_checkpoint.name == FINAL_NAME
            and self._last_saved_step == self.global_step
        )
        if finished and not already_final:
            self._save(final=True)
        return finished

    def _train_epochs(self, run: _Run) -> bool:
        """Epoch by epoch until the last one (True) or a stop (False)."""
        t = self.cfg.train
        while self.epoch < t.epochs:
            run.sampler.set_epoch(self.epoch)
            run.sampler.set_start(self.step_in_epoch * t.accumulation_steps * t.batch_size)
            run.window = self._new_window(len(self._dice_names))
            micro = self.step_in_epoch * t.accumulation_steps
            for batch in run.loader:
                last_micro = (micro + 1) % t.accumulation_steps == 0
                self._micro_batch(run, batch, micro, sync=last_micro)
                micro += 1
                if last_micro and self._optimizer_step(run):
                    return False  # stopped, with a checkpoint
            self.epoch += 1
            self.step_in_epoch = 0
            if self.cfg.run.save_every_epoch and self.epoch < t.epochs:
                self._save()
        return True

    def _micro_batch(self, run: _Run, batch: dict[str, Any], micro: int, sync: bool) -> None:
        """Forward and backward of one micro-batch (gradients all-reduced only if ``sync``)."""
        cfg, t, device = self.cfg, self.cfg.train, self.ctx.device
        if "synth_seed" in batch:  # generated on the training device
            image, label = run.generated.draw(batch["synth_seed"], batch["source"], device)
        else:
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
        if cfg.data.normalization == "per_batch":
            image = batch_zscore(image)
        mask_only = mask_only_iterations(
            t.num_clicks,
            t.mask_only_random,
            t.mask_only_last,
            step_rng(t.seed, self.epoch, micro),
        )
        with maybe_no_sync(run.loop, skip_sync=not sync):
            out = run.loop(image, label, batch["seed"], mask_only)
            loss = out["loss"]
            # fp16: the GradScaler skips steps with inf/NaN gradients instead
            if not self.scaler.is_enabled() and not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {loss.item()} at epoch {self.epoch}, global "
                    f"step {self.global_step} (lower optim.lr or use train.amp=bf16)"
                )
            self.scaler.scale(loss / t.accumulation_steps).backward()
        window = run.window
        window["loss"] += float(loss.detach())
        window["dice"] += out["dice"].detach().cpu().double()
        window["count"] += 1
        window["samples"] += image.shape[0]
        run.samples += image.shape[0]
        if "class_crops" in out:
            run.class_crops += out["class_crops"].detach().cpu().double()  # type: ignore[operator]

    def _optimizer_step(self, run: _Run) -> bool:
        """One optimizer step and what follows it (schedule, log, checkpoint); True: stop."""
        r = self.cfg.run
        clip = self.cfg.optim.grad_clip
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in run.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, clip)
        self._step_lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.step_in_epoch += 1
        run.steps += 1
        self.scheduler.step()  # after the counters: the rate of the next step
        run.bar.update(1)
        if self.global_step % r.log_every_steps == 0:
            self._log(run)
            run.window = self._new_window(len(self._dice_names))
        stop = self._stop_due(run)
        due = self._save_due()
        if stop or due or self.global_step % r.save_every_steps == 0:
            self._save()
        return stop

    def _stop_due(self, run: _Run) -> bool:
        """Stop now (any rank): ``stop_after_steps``/``_minutes`` reached or a stop signal."""
        r = self.cfg.run
        stop = r.stop_after_steps is not None and run.steps >= r.stop_after_steps
        if r.stop_after_minutes is not None:
            stop = stop or time.perf_counter() - run.t0 >= 60 * r.stop_after_minutes
        return any_rank(stop or self._stop_requested, self.ctx)

    def _save_due(self) -> bool:
        """``run.save_every_minutes`` have passed since the last checkpoint (any rank)."""
        minutes = self.cfg.run.save_every_minutes
        if minutes is None:
            return False
        return any_rank(time.perf_counter() - self._last_save_time >= 60 * minutes, self.ctx)

    def _finish(self, run: _Run, finished: bool) -> TrainResult:
        """The result on every rank; rank 0 writes ``summary.json``."""
        ctx = self.ctx
        elapsed = time.perf_counter() - run.t0
        throughput = run.samples * ctx.world_size / elapsed if run.samples else None
        crops_seen = self._class_crops_seen(run) if self.semantic else None
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
        status = "finished" if finished else "stopped"
        if ctx.is_main:
            summary = {
                "status": status,
                "global_step": self.global_step,
                "epoch": self.epoch,
                "checkpoint": str(self._last_checkpoint) if self._last_checkpoint else None,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "samples_per_second": throughput,
                "peak_memory_mb": peak,
                "last_loss": result.last_loss,
                **({} if crops_seen is None else {"class_crops": crops_seen}),
            }
            summary_text = json.dumps(summary, indent=2, default=str)
            atomic_write_text(self.run_dir / "summary.json", summary_text)
        # debug: ``sammed3d train`` prints this line itself (said once)
        logger.debug(
            "%s at epoch %d, global step %d; checkpoint %s",
            status,
            self.epoch,
            self.global_step,
            self._last_checkpoint,
        )
        return result

    def _class_crops_seen(self, run: _Run) -> dict[str, int]:
        """Semantic runs: training crops of this invocation (all ranks) containing each class;
        warns about a class that none contained."""
        from sammed3d.training.semantic import absent_class_message

        ctx = self.ctx
        assert run.class_crops is not None
        seen = torch.tensor([float(run.samples)], dtype=torch.float64)
        counts = torch.cat([run.class_crops, seen])
        totals = all_reduce_mean(counts.to(ctx.device), ctx).cpu() * ctx.world_size
        classes = list(unwrap(run.loop).model.spec.classes)  # type: ignore[union-attr]
        message = absent_class_message(
            classes, totals[:-1].tolist(), round(float(totals[-1])),
            self.cfg.task.foreground_fraction,
        )  # fmt: skip
        if message and ctx.is_main:
            logger.warning(message)
        return {c: round(float(v)) for c, v in zip(classes, totals[:-1], strict=True)}


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


def build_click_loop(
    model: nn.Module,
    cfg: TrainingConfig,
    *,
    autocast_dtype: torch.dtype | None = None,
    num_clicks: int | None = None,
) -> ClickLoop:
    """The :class:`ClickLoop` of ``cfg.train`` (and ``cfg.model.freeze_image_encoder``) on
    ``model``, as the trainer runs it; ``num_clicks`` replaces ``train.num_clicks``."""
    t = cfg.train
    return ClickLoop(
        model,  # type: ignore[arg-type]
        num_clicks=t.num_clicks if num_clicks is None else num_clicks,
        click_threshold=t.click_threshold,
        accumulate_clicks=t.accumulate_clicks,
        detach_mask_prompt=t.detach_mask_prompt,
        freeze_image_encoder=cfg.model.freeze_image_encoder,
        autocast_dtype=autocast_dtype,
        loss_resolution=t.loss_resolution,
        first_click_weight=t.first_click_weight,
        center_click_fraction=t.center_click_fraction,
        first_click_multimask=t.first_click_multimask,
        iou_loss_weight=t.iou_loss_weight,
        centre_first_click=t.centre_first_click,
        leak_prompt_fraction=t.leak_prompt_fraction,
        leak_prompt_any_click=t.leak_prompt_any_click,
        leak_prompt_max_fraction=t.leak_prompt_max_fraction,
        choose_extent_fraction=t.choose_extent_fraction,
        dice_fall_weight=t.dice_fall_weight,
    )
