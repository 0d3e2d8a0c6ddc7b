"""Docs that run: every command shown in README.md and docs/*.md is executed (or, for a
fragment with elided arguments, checked against the real parser), so the docs cannot drift.

Commands are discovered from the text, not listed here: a command documented tomorrow is
covered tomorrow. Discovery: lines of fenced ``bash``/``sh``/``console``/unlabelled blocks and
inline code spans that start with ``sammed3d``, ``./dev`` or ``torchrun ... -m sammed3d``
(``\\`` continuations and indented synopsis lines are joined, ``# comments`` and ``| pipes``
dropped).

How a command runs (in-process ``sammed3d.cli.main``, one scratch folder per document, commands
in document order so that ``train -o runs/x`` precedes ``train --resume runs/x``):

* Synopses: ``[optional groups]``: every variant (none, each group alone) must parse with the
  real parser; the variant without them is executed. ``a|b`` takes ``a``; ``X...`` one ``X``;
  ``[a \\| b]`` (a table cell's escaped pipe) is the two groups ``[a]`` and ``[b]``.
* Placeholders (``IMAGE``, ``I J K``, ``OUT``, ``CKPT``, ``<Colin27 AAL>``, ...) become
  fixtures (:data:`METAVARS`). Paths the docs name as inputs (``ct.nii.gz``,
  ``sam_med3d_turbo.pth``, ``nnUNet_raw/Dataset003_Liver``, ``/data/...``) are created in the
  scratch folder (absolute paths made relative) before the command runs: a small CT-like
  image, label maps, a ``sam_med3d_tiny`` checkpoint, a two-case nnU-Net dataset.
* Published weights by name (``--checkpoint turbo``, ``weights download turbo``) come from a
  loopback stand-in of the Hugging Face Hub that serves the tiny checkpoint under the real
  repository and file name (:func:`_offline_weights`): no command reaches the network.
* ``serve`` builds its app and binds its socket, but never starts listening (:func:`_serve`).
* Every checkpoint is a tiny one (``build_model("sam_med3d_tiny")`` + ``save_checkpoint``, also
  as ``$SAMMED3D_CHECKPOINT``); ``train`` runs the tiny architecture for one step
  (:data:`TRAIN_OVERRIDES`); ``prepare --workers N`` runs with one worker; ``torchrun``
  commands run their ``-m sammed3d`` part in one process.
* A standalone ``...`` elides arguments: such a fragment is not run, but every option it shows
  must exist for its command.
* ``./dev test`` is this suite and ``./dev lint`` runs in CI (:data:`DEV_ONLY`); a bare
  ``sammed3d <command>`` in prose names a command, which must exist.
* Commands not in :data:`IN_PROCESS` (documented after this harness was written) run as a
  subprocess with a time limit; one that needs fixtures or does not return gets a recipe.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

DEV_ONLY = {"test": "is this test suite", "lint": "runs ruff (CI)"}

#: Commands known to finish on their own: run in this process. Any other command (one
#: documented later) runs as ``python -m sammed3d`` with a time limit, so a command that does
#: not return (a server) fails with a message instead of hanging the suite.
IN_PROCESS = {
    "demo",
    "segment",
    "evaluate",
    "metrics",
    "train",
    "prepare",
    "export",
    "info",
    "predict",
    "weights",
    "serve",  # with a recipe: the app is built, uvicorn is not started (_serve)
}
OTHER_COMMAND_TIMEOUT_S = 120

#: Commands of sections other people are rewriting, known not to run yet. Each entry must
#: still be in the docs and must still fail; remove it when the text is fixed.
KNOWN_DRIFT: dict[str, str] = {}

#: Synopsis placeholders -> values; ``(command, option)`` keys win over plain ones. Options
#: are the flag right before the placeholder ("" for positionals).
METAVARS: dict[str | tuple[str, str], str] = {
    "IMAGE": "ct.nii.gz",
    "I": "8",
    "J": "7",
    "K": "5",
    "OUT.nii.gz": "out_mask.nii.gz",
    ("segment", "OUT"): "out_mask.nii.gz",
    ("evaluate", "OUT"): "eval/out",
    ("evaluate", "DIR"): "eval/out",
    ("evaluate", "--data"): "nnUNet_raw/Dataset001_Docs",
    ("prepare", "DIR"): "prepared",
    "OUT": "out",
    "OUT.pth": "exported.pth",
    "P": "pred.nii.gz",
    "G": "gt.nii.gz",
    "T": "1",
    "F": "metrics_out.json",
    ("--label", "N"): "2",
    ("--max-rois", "N"): "2",
    ("--zoom-spacing", "MM"): "1.0",
    ("--fine-zoom-spacing", "MM"): "0.5",
    ("--refine-boundary", "MM"): "3",
    ("--rim-edit", "MM"): "3",
    ("--contrast-guard", "C"): "0.4",
    "N": "1",
    "CKPT": "tiny.pth",
    "TASK.pth": "task.pth",
    "CFG": "tiny_cpu",
    "RUN": "runs/docs",
    "RUN_DIR": "runs/docs",
    "RUN_OR_CKPT": "tiny.pth",
    "CKPT_OR_RUN_DIR": "tiny.pth",
    "SRC": "nnUNet_raw/Dataset001_Docs",
    "DIR": "nnUNet_raw/Dataset001_Docs",
    "<Colin27_AAL>": "nnUNet_raw/Dataset001_Docs",
    ("--layout", "NAME"): "nnunet",  # the layout of SRC/DIR above
    "VOLUME": "ct.nii.gz",
    ("weights", "NAME"): "turbo",
    ("weights", "--name"): "turbo",
    ("weights", "FILE"): "sam_med3d_turbo.pth",
    ("weights", "FILE_OR_NAME"): "sam_med3d_turbo.pth",
}

#: Appended to every ``train`` command: the tiny architecture, one optimizer step.
#: Packaged training configs that train on generated data only (no data.roots), and how the
#: harness shrinks them: the dense test model, two generated crops without the data assets.
GENERATED_DATA_CONFIGS = {"default_model"}
GENERATED_TRAIN_OVERRIDES = [
    "model.name=sam_med3d_tiny_dense",
    "data.synthetic_per_epoch=2",
    "data.shape_bank=null",
    "data.anatomy=null",
    "data.anatomy_fraction=0",
    "data.num_workers=0",
    "train.epochs=1",
    "train.batch_size=1",
    "train.num_clicks=2",
    "train.amp=none",
    "train.device=cpu",
]


#: Packaged configs that fine-tune the bundled model's kind of architecture (click maps, a
#: high-res path): the harness gives them a tiny model of that kind and its own --init file.
DENSE_INIT_CONFIGS = {"finetune_default"}


def _config_of(argv: list[str]) -> str | None:
    """The value of ``--config`` in a ``train`` argv, if any."""
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None


TRAIN_OVERRIDES = [
    "model.name=sam_med3d_tiny",
    "train.epochs=1",
    "train.batch_size=1",
    "train.accumulation_steps=1",
    "train.num_clicks=2",
    "train.mask_only_random=[1,1]",
    "train.amp=none",
    "train.device=cpu",
    "data.num_workers=0",
    "data.min_target_voxels=20",
    "run.tensorboard=false",
    "run.stop_after_steps=1",
]

_FENCE = re.compile(r"^\s*```(\w*)\s*$")
_START = re.compile(r"^(?:\$ )?(?:sammed3d|\./dev|torchrun|python -m sammed3d)\b")
_INLINE = re.compile(r"`((?:sammed3d|\./dev) [^`]*)`")


@dataclass(frozen=True)
class DocCommand:
    doc: str
    line: int
    text: str
    inline: bool  # a code span in prose or a table, not a line of a code block

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.text[:60]}"


def discover(path: Path) -> list[DocCommand]:
    """The commands shown in one Markdown file, in order."""
    out: list[DocCommand] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    block: str | None = None  # language of the open fence
    pending: tuple[int, str] | None = None
    name = path.relative_to(REPO).as_posix()

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            text = re.sub(r"\s+", " ", pending[1]).strip()
            out.append(DocCommand(name, pending[0], text, inline=False))
            pending = None

    for n, raw in enumerate(lines, start=1):
        m = _FENCE.match(raw)
        if m:
            flush()
            block = None if block is not None else m.group(1)
            continue
        if block is None:
            for m2 in _INLINE.finditer(raw):
                out.append(DocCommand(name, n, m2.group(1).strip(), inline=True))
            continue
        if block not in ("", "bash", "sh", "console", "shell"):
            continue
        text = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if pending is not None and (pending[1].endswith("\\") or raw[:1].isspace()):
            pending = (pending[0], pending[1].rstrip("\\") + " " + text.strip())
            continue
        flush()
        if _START.match(text.strip()):
            pending = (n, text.strip())
    flush()
    return out


ALL = [c for doc in DOCS for c in discover(doc)]


def _normalise(text: str) -> str:
    text = text.split(" | ")[0]  # shell plumbing after the command
    text = re.sub(r"^\$ ", "", text)
    return re.sub(r"<([^<>]+)>", lambda m: "<" + m.group(1).replace(" ", "_") + ">", text)


def _sammed3d_argv(tokens: list[str]) -> list[str] | None:
    """The argument list after ``sammed3d`` (None for dev-script/template lines)."""
    if tokens[0] == "sammed3d":
        return tokens[1:]
    if tokens[0] == "./dev":
        return tokens[1:]
    if tokens[0] in ("torchrun", "python"):
        at = tokens.index("-m")
        assert tokens[at + 1] == "sammed3d", tokens
        return tokens[at + 2 :]
    raise AssertionError(f"unexpected command start {tokens[0]!r}")


def _variants(text: str) -> tuple[str, list[str]]:
    """(base text without optional groups, [base + one group, ...]); ``[a \\| b]`` is two."""
    group = r"(?:^|(?<=\s))\[([^\[\]]*)\]"  # not `key=[a,b]` values
    groups = [alt for g in re.findall(group, text) for alt in re.split(r"\s*\\\|\s*", g)]
    base = re.sub(group, "", text)
    return base, [f"{base} {g}" for g in groups]


def _clean(tokens: list[str]) -> tuple[list[str], bool]:
    """Drop repetition marks and take the first alternative; report elisions."""
    out, elided = [], False
    for tok in tokens:
        if tok == "...":
            elided = True
            continue
        if tok.endswith("...") and len(tok) > 3:
            tok = tok[:-3]
        if "|" in tok and not tok.startswith("data."):
            tok = tok.split("|")[0]
        out.append(tok)
    return out, elided


#: Upper-case words that are real values, not placeholders.
LITERALS = {"CT", "MR", "US"}


def _is_orientation(tok: str) -> bool:
    """An axis code such as ``SAR`` or ``LPS``: one letter of each of R/L, A/P, S/I."""
    return len(tok) == 3 and all(sum(c in pair for c in tok) == 1 for pair in ("RL", "AP", "SI"))


def _is_placeholder(tok: str) -> bool:
    if tok in LITERALS or _is_orientation(tok):
        return False
    return tok.startswith("<") or bool(re.fullmatch(r"[A-Z][A-Z_]*(\.[a-z.]+)?", tok))


def _substitute(argv: list[str]) -> list[str]:
    """Placeholders -> values (see :data:`METAVARS`); absolute example paths -> relative."""
    command = argv[0]
    out = [command]
    for n, tok in enumerate(argv[1:], start=1):
        prev = argv[n - 1] if n > 1 else ""
        option = prev if prev.startswith("-") else ""
        if _is_placeholder(tok):
            for key in ((command, option), (option, tok), (command, tok), tok):
                if key in METAVARS:
                    tok = METAVARS[key]  # type: ignore[index]
                    break
            else:
                raise AssertionError(f"unknown placeholder {tok!r}: add it to METAVARS")
        if tok.startswith("/") and not tok.startswith("//"):
            tok = tok.lstrip("/")  # absolute example paths live in the scratch folder
        if tok.startswith("~/"):
            tok = tok[2:]  # and so does the example's home folder
        if tok.startswith("data.roots=["):
            tok = (
                "data.roots=["
                + ",".join(p.lstrip("/") for p in tok[len("data.roots=[") : -1].split(","))
                + "]"
            )
        out.append(tok)
    return out


def _parser_for(command: str) -> argparse.ArgumentParser:
    from sammed3d.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert command in sub.choices, f"the docs show `sammed3d {command}`, which does not exist"
    return sub.choices[command]


def _parses(argv: list[str]) -> None:
    from sammed3d.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"does not parse: sammed3d {' '.join(argv)}") from exc


# ------------------------------------------------------------------------------------------
# fixtures the docs' paths become


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from sammed3d import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("sam_med3d_tiny"), tmp_path_factory.mktemp("docs") / "t.pth")


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


def _mixed_layouts(root: Path) -> Path:
    """``root/mixed``: KiTS case folders beside a ``manifest.csv``, so that detection stops
    with "looks like several layouts" and ``--layout`` has to choose."""
    from tests.data import replicas

    mixed = root / "mixed"
    shutil.move(replicas.kits(root / ".mixed_src"), mixed)
    shutil.rmtree(root / ".mixed_src")
    (mixed / "manifest.csv").write_text("image,label\n", encoding="utf-8")
    return mixed


def _replica_recipes() -> dict[str, Callable[[Path], Path]]:
    """How the dataset paths the docs show end -> a builder of a tiny replica (tests/data):
    ``builder(root)`` writes ``root/<ending>`` and returns it."""
    from tests.data import replicas

    return {
        "Totalsegmentator_dataset_v201": replicas.totalsegmentator,
        "kits23/dataset": replicas.kits,
        "study/manifest.csv": lambda root: replicas.manifest(root) / "manifest.csv",
        "mixed": _mixed_layouts,
    }


def _replica(cwd: Path, path: str) -> None:
    """Build the dataset replica a documented ``prepare`` source names (if one is known)."""
    if (cwd / path).exists():
        return
    for ending, build in _replica_recipes().items():
        if path == ending or path.endswith("/" + ending):
            root = cwd / path[: -len(ending)]
            assert build(root) == cwd / path, f"the replica for {ending} is not at {path}"
            return


def _parsed(argv: list[str]) -> argparse.Namespace:
    from sammed3d.cli import build_parser

    return build_parser([argv[0]]).parse_args(argv)


def _materialize(argv: list[str], cwd: Path, ckpt: Path) -> list[str]:
    """Create the inputs the command names; returns argv with test-only adjustments."""
    from sammed3d.io import Volume, write_volume
    from tests.training.conftest import write_nnunet_dataset
    from tests.volumes import image_array

    command = argv[0]
    ds_pattern = re.compile(r"(?:^|/)(?:Dataset|Task)\d+_\w+$")

    def dataset(path: str) -> None:
        if not (cwd / path).exists():
            write_nnunet_dataset(cwd / path, n_cases=1, shape=(40, 36, 32))

    def checkpoint(path: str) -> None:
        target = cwd / path
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ckpt, target)

    def task_checkpoint(path: str) -> None:  # `predict` takes task models
        if not (cwd / path).exists():
            import torch

            from sammed3d.build import get_config
            from sammed3d.task import TaskModel, TaskSpec, save_task_checkpoint

            torch.manual_seed(0)
            spec = TaskSpec(get_config("sam_med3d_tiny"), ("blob", "speck"), decoder_features=4)
            save_task_checkpoint(TaskModel(spec), cwd / path)

    for n, tok in enumerate(argv):
        prev = argv[n - 1] if n else ""
        if ds_pattern.search(tok):
            dataset(tok)
        if tok.startswith("data.roots=["):
            for p in tok[len("data.roots=[") : -1].split(","):
                dataset(p)
        if prev in ("--checkpoint", "--init") and tok.endswith(".pth"):
            (task_checkpoint if command == "predict" else checkpoint)(tok)
        if prev in ("--pred", "--gt") and not (cwd / tok).exists():
            labels = (image_array((20, 18, 12)) > 300).astype(np.uint8)
            if prev == "--pred":
                labels = np.roll(labels, 1, axis=0)
            write_volume(Volume(labels, (1.5, 1.5, 2.0), (3.0, -4.0, 5.0)), cwd / tok)
    positionals = [t for t in argv[1:] if not t.startswith("-") and "=" not in t]
    if command == "predict":  # options of predict all take a value: skip those values
        positionals = [
            t
            for n, t in enumerate(argv[1:], start=1)
            if not t.startswith("-") and not argv[n - 1].startswith("-")
        ]
    if command in ("segment", "predict") and positionals and not (cwd / positionals[0]).exists():
        shape = [20, 18, 12]
        if command == "segment":  # grown to hold the documented clicks (voxel indices)
            args = _parsed(argv)
            if args.coords == "voxel":
                for point, _positive in args.clicks or []:
                    shape = [
                        max(n, int(round(float(c))) + 1) for n, c in zip(shape, point, strict=True)
                    ]
        vol = Volume(image_array(tuple(shape)), (1.5, 1.5, 2.0), (3.0, -4.0, 5.0))
        write_volume(vol, cwd / positionals[0])
    if command == "export" and positionals and not (cwd / positionals[0]).exists():
        checkpoint(positionals[0])
    if command == "info" and "--checkpoint" in argv:
        checkpoint(argv[argv.index("--checkpoint") + 1])
    if command == "prepare":
        for source in _parsed(argv).sources:
            _replica(cwd, source)
    if command == "serve":  # the files its web page offers
        for i, name in enumerate(_parsed(argv).volumes):
            if not (cwd / name).exists():
                vol = Volume(image_array((20, 18, 12), seed=i), (1.5, 1.5, 2.0), (3.0, -4.0, 5.0))
                write_volume(vol, cwd / name)
    if command == "weights":
        args = _parsed(argv)
        if args.action == "verify":  # a file the reader fetched by hand
            for target in args.targets:
                if target.endswith(".pth"):
                    checkpoint(target)
    if command == "prepare" and "--workers" in argv:  # worker processes: tests/data
        at = argv.index("--workers")
        argv = [*argv[: at + 1], "1", *argv[at + 2 :]]
    if command == "evaluate":
        out = argv[argv.index("--output") + 1] if "--output" in argv else None
        if "--merge" in argv and out and not (cwd / out / "config.json").exists():
            dataset(METAVARS[("evaluate", "--data")])
            from sammed3d.cli import main

            setup = ["evaluate", "--data", METAVARS[("evaluate", "--data")], "--method"]
            setup += ["region-growing", "--clicks", "1,5", "--output", out, "--no-progress"]
            assert main(setup) == 0
    if command == "train":
        if "--resume" in argv:
            run = argv[argv.index("--resume") + 1]
            if not (cwd / run / "config.yaml").exists():  # a run to continue
                from sammed3d.cli import main

                dataset(METAVARS["SRC"])
                setup = ["train", "--config", "tiny_cpu", "-o", run, "--no-progress"]
                assert main([*setup, f"data.roots=[{METAVARS['SRC']}]", *TRAIN_OVERRIDES]) == 0
            argv = [*argv, "run.stop_after_steps=1"]
        elif _config_of(argv) in GENERATED_DATA_CONFIGS:
            argv = [*argv, *GENERATED_TRAIN_OVERRIDES]
        elif "--print-config" not in argv and "--cache-only" not in argv:
            if not any(t.startswith("data.roots=") for t in argv):
                dataset(METAVARS["SRC"])
                argv = [*argv, f"data.roots=[{METAVARS['SRC']}]"]
            argv = [*argv, *TRAIN_OVERRIDES]
            if _config_of(argv) in DENSE_INIT_CONFIGS and "--init" in argv[:-1]:
                # the bundled model's kind of architecture, tiny: its own tiny --init file
                from sammed3d import build_model, save_checkpoint

                dense = cwd / "tiny_dense_init.pth"
                if not dense.exists():
                    save_checkpoint(build_model("sam_med3d_tiny_dense"), dense)
                argv[argv.index("--init") + 1] = str(dense)
                argv = [*argv, "model.name=sam_med3d_tiny_dense"]
    return argv


def _run_in(cwd: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch, ckpt: Path) -> int:
    from sammed3d.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SAMMED3D_CHECKPOINT", str(ckpt))
    argv = _materialize(argv, cwd, ckpt)
    if argv[0] in ("segment", "demo", "evaluate", "train"):
        argv = [*argv, "--no-progress"]
    model_run = argv[0] in ("segment", "demo") or (
        argv[0] == "evaluate" and "region-growing" not in argv and "--merge" not in argv
    )
    if model_run and "--no-extend" not in argv:
        argv = [*argv, "--no-extend"]  # random tiny weights would grow into 8 ROIs per click
    if argv[0] in ("segment", "metrics", "export", "demo", "predict") and "--overwrite" not in argv:
        argv = [*argv, "--overwrite"]  # a doc may show the same output twice
    if argv[0] in IN_PROCESS:
        from tests.fake_hub import guard_loopback

        refused = guard_loopback(monkeypatch)
        hub = _offline_weights(monkeypatch, cwd.parent / f"{cwd.name}_weights", ckpt)
        try:
            code = _serve(argv, monkeypatch) if argv[0] == "serve" else main(argv)
        finally:
            hub.stop()
        assert refused == [], f"`sammed3d {' '.join(argv)}` reached for the network: {refused}"
        return code
    import os
    import subprocess
    import sys

    # no stand-in Hub out of process: a published name fails at once, it does not hang
    env = {**os.environ, "SAMMED3D_CHECKPOINT": str(ckpt), "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sammed3d", *argv],
            cwd=cwd,
            env=env,
            timeout=OTHER_COMMAND_TIMEOUT_S,
            capture_output=True,
            text=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"`sammed3d {' '.join(argv)}` did not finish in {OTHER_COMMAND_TIMEOUT_S} s (a "
            "server?): give it a recipe in tests/test_docs.py (_materialize / IN_PROCESS)"
        )
    sys.stderr.write(proc.stderr)
    return proc.returncode


def _offline_weights(monkeypatch: pytest.MonkeyPatch, home: Path, ckpt: Path) -> FakeHub:
    """Published weights by name, offline: a loopback Hub serving the tiny checkpoint.

    What is stubbed: the Hub itself (:class:`tests.fake_hub.FakeHub` on 127.0.0.1, at
    ``$HF_ENDPOINT``) and, in the weights table, the size, SHA-256 and architecture of every
    Hub-hosted entry, which become the stand-in file's (the real ``sam_med3d_turbo.pth`` is
    402 MB and not here). Entries not on the Hub (``sam_med3d``: Google Drive) get the
    stand-in as a hand-placed local copy in ``$SAMMED3D_HOME``, the documented offline route.
    What still runs for real: name
    lookup, ``huggingface_hub`` download into ``$HF_HOME`` (under ``home``, one per document, so
    a document's ``weights download`` is seen by its later commands), size/hash/format
    verification, cache hits, local copies.
    """
    import dataclasses
    import hashlib

    from sammed3d import weights
    from tests.fake_hub import start_loopback_hub

    body = ckpt.read_bytes()
    sha256 = hashlib.sha256(body).hexdigest()
    hub = start_loopback_hub(monkeypatch, home)
    for key, entry in weights.WEIGHTS.items():
        if entry.bundled:
            continue
        # the stand-in file is a tiny model, and the table says so (train checks it by name)
        tiny = "sam_med3d_tiny" if entry.architecture else None
        stand_in = dataclasses.replace(entry, size=len(body), sha256=sha256, architecture=tiny)
        monkeypatch.setitem(weights.WEIGHTS, key, stand_in)
        if entry.repo_id is not None:
            hub.host(entry.repo_id, entry.filename, body)
        elif not weights.local_copy_path(stand_in).exists():
            weights.local_copy_path(stand_in).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ckpt, weights.local_copy_path(stand_in))
    return hub


def _serve(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``sammed3d serve`` up to the point where it would serve: arguments checked, checkpoint
    loaded, app built, socket bound (to a free port: the documented one may be taken on a
    shared machine); ``uvicorn.Server.run`` is replaced by a check that it got that app and
    socket, and the app answers ``/healthz``."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sammed3d.cli import main
    from sammed3d.cli import serve as serve_cli

    started: list[tuple[object, object]] = []

    def run(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        started.append((server.config.app, sockets))

    bind = serve_cli._bind
    monkeypatch.setattr(serve_cli, "_bind", lambda host, port: bind(host, 0))
    monkeypatch.setattr(uvicorn.Server, "run", run)
    code = main(argv)
    if code != 0:
        return code
    assert len(started) == 1, "serve returned without starting the server"
    app, sockets = started[0]
    try:
        assert isinstance(app, FastAPI), f"uvicorn got {type(app).__name__}, not the app"
        assert isinstance(sockets, list) and len(sockets) == 1, sockets
        assert sockets[0].getsockname()[1] != 0, "the socket is not bound"
        client = TestClient(app, base_url="http://127.0.0.1")  # a host it always allows
        assert client.get("/healthz").status_code == 200
    finally:
        for sock in sockets or []:
            sock.close()
    return code


# ------------------------------------------------------------------------------------------
# the tests


def test_commands_are_discovered() -> None:
    texts = {c.text for c in ALL}
    assert len(ALL) > 20
    assert any(t.startswith("sammed3d segment IMAGE") for t in texts)  # tables
    assert any(t.startswith("sammed3d evaluate --data nnUNet_raw") for t in texts)  # blocks
    assert any("--coords voxel|ras|lps" in t for t in texts)  # indented synopsis lines


def test_known_drift_entries_are_still_current() -> None:
    texts = {c.text for c in ALL}
    stale = [t for t in KNOWN_DRIFT if t not in texts]
    assert not stale, f"KNOWN_DRIFT entries no longer in the docs, remove them: {stale}"


@pytest.mark.parametrize("cmd", ALL, ids=lambda c: c.id)
def test_documented_command_runs(
    cmd: DocCommand,
    workdirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    tiny_ckpt: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _normalise(cmd.text)
    tokens = shlex.split(text)
    if tokens[0] == "./dev" and len(tokens) > 1 and tokens[1] in DEV_ONLY:
        pytest.skip(f"./dev {tokens[1]} {DEV_ONLY[tokens[1]]}")
    if len(tokens) > 1 and tokens[1].startswith("<"):
        return  # `sammed3d <command> ...`: the generic form, not a command
    argv = _sammed3d_argv(tokens)
    assert argv, cmd
    if argv[0].startswith("-"):  # `sammed3d --help`, `sammed3d --version`: top-level options
        _run_top_level(cmd, argv, capsys)
        return
    parser = _parser_for(argv[0])
    if len(argv) == 1 and tokens[0] == "sammed3d" and cmd.inline:
        return  # a bare name in prose: the command exists (checked above)
    prefix = len(tokens) - len(argv)  # `sammed3d`, `./dev`, `torchrun ... -m sammed3d`
    base, variants = _variants(text)
    base_argv, elided = _clean(shlex.split(base)[prefix:])
    if elided:  # a fragment: every option shown must exist
        known = {s for a in parser._actions for s in a.option_strings}
        shown = [t for t in base_argv[1:] if t.startswith("-")]
        for v in variants:
            shown += [t for t in _clean(shlex.split(v)[prefix:])[0][1:] if t.startswith("-")]
        assert set(shown) <= known, f"{cmd.id}: unknown options {set(shown) - known}"
        return
    argv = _substitute(base_argv)
    if cmd.text in KNOWN_DRIFT:
        with pytest.raises(AssertionError):  # strict: once it runs, drop the entry
            _parses(argv)
            _run_command(cmd, argv, workdirs, tmp_path_factory, tiny_ckpt, monkeypatch, capsys)
        return
    for variant in variants:
        _parses(_substitute(_clean(shlex.split(variant)[prefix:])[0]))
    _parses(argv)
    if any(c.doc == cmd.doc and c.text == cmd.text and c.line < cmd.line for c in ALL):
        return  # shown again in the same document: ran above
    _run_command(cmd, argv, workdirs, tmp_path_factory, tiny_ckpt, monkeypatch, capsys)


def _run_top_level(cmd: DocCommand, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from sammed3d.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exited:  # argparse's own exit after --help/--version
        main(argv)
    out = capsys.readouterr().out
    assert exited.value.code == 0, f"{cmd.id}: `sammed3d {' '.join(argv)}` exited {exited.value}"
    if "--help" in argv or "-h" in argv:
        assert out.startswith("usage: sammed3d"), out[:200]
        assert all(name in out for name in COMMANDS), f"{cmd.id}: commands missing from --help"


def _run_command(
    cmd: DocCommand,
    argv: list[str],
    workdirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    tiny_ckpt: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cwd = workdirs.setdefault(cmd.doc, tmp_path_factory.mktemp(cmd.doc.replace("/", "_")))
    code = _run_in(cwd, argv, monkeypatch, tiny_ckpt)
    err = capsys.readouterr().err
    assert code == 0, f"{cmd.id}\n`sammed3d {' '.join(argv)}` exited {code}: {err[-600:]}"
