"""``sammed3d train`` and ``sammed3d export``: exit codes, resume, published export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from sammed3d import build_model, load_checkpoint
from sammed3d.build import save_checkpoint
from sammed3d.cli import main
from tests.training.conftest import write_nnunet_dataset


@pytest.fixture()
def dataset(tmp_path):
    return write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=2)


def _train(*args: str) -> int:
    return main(["train", "--no-progress", *args])


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_train_stop_resume_and_export(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    common = [f"data.roots=[{dataset}]", "train.batch_size=1", "train.epochs=2"]
    assert _train("--config", "tiny_cpu", "-o", str(run), *common, "run.stop_after_steps=1") == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "stopped: epoch 0, step 1" in out and f"--resume {run}" in out
    assert "stopped at epoch" not in captured.err  # said once (the trainer logged it as well)
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["roots"] == [str(dataset)] and saved["run"]["output_dir"] == str(run)

    assert _train("--resume", str(run), "run.stop_after_steps=null") == 0
    captured = capsys.readouterr()
    assert "finished: epoch 2, step 4" in captured.out and "finished at epoch" not in captured.err
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "finished" and summary["global_step"] == 4

    exported = tmp_path / "published.pth"
    assert main(["export", str(run), str(exported)]) == 0
    obj = torch.load(exported, map_location="cpu", weights_only=True)
    assert set(obj) == {"model_state_dict"}
    final = load_checkpoint(run / "checkpoints" / "final.pth").state_dict()
    assert obj["model_state_dict"].keys() == final.keys()
    assert all(torch.equal(obj["model_state_dict"][k], final[k]) for k in final)
    assert load_checkpoint(exported).img_size == 64  # architecture inferred from shapes

    assert main(["export", str(run), str(exported)]) == 2
    assert "exists; pass --overwrite" in _err(capsys)
    assert main(["export", str(run), str(exported), "--overwrite"]) == 0


def test_init_from_exported_checkpoint(tmp_path, dataset, capsys):
    src = save_checkpoint(build_model("sam_med3d_tiny"), tmp_path / "ours.pth")
    published = tmp_path / "pub.pth"
    assert main(["export", str(src), str(published)]) == 0
    args = ["--config", "tiny_cpu", "--init", str(published), "-o", str(tmp_path / "ft")]
    assert _train(*args, f"data.roots=[{dataset}]", "train.epochs=1", "train.batch_size=1") == 0
    cfg = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"]["init_checkpoint"] == str(published)
    # the run's model says what it started from and what it saw (2026-12-03 re-trial); export
    # keeps this metadata for models with settings beyond their weights (the bundled kind)
    meta = load_checkpoint(tmp_path / "ft").metadata
    assert meta["init_checkpoint"] == str(published) and meta["data_roots"] == [str(dataset)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "tiny_cpu", "optim.lrr=1"], "unknown config key(s) ['optim.lrr']"),
        (["--config", "tiny_cpu", "train.epochs=x"], "train.epochs must be an integer"),
        (["--config", "nope.yaml"], "config file not found"),
        ([], "--config is required"),
        (["--config", "tiny_cpu", "--resume", "somewhere"], "drop --config"),
        (["--resume", "no_such_run"], "run folder not found"),
        (["--config", "tiny_cpu", "lr"], "section.key=value"),
        (["--config", "tiny_cpu"], "data.roots is empty"),
        (["--config", "finetune_turbo", "data.roots=[.]"], "refusing to train from scratch"),
        (  # refused by name, before a 402 MB download (2026-12-03 re-trial)
            ["--config", "finetune_default", "--init", "turbo", "data.roots=[.]"],
            "--init turbo is a sam_med3d_turbo, which cannot fit model.name=sam_med3d_demo: "
            "fine-tune it with --config finetune_turbo",
        ),
        (  # the fitting config with its model overridden: the override is what to change
            ["--config", "finetune_turbo", "--init", "turbo", "model.name=sam_med3d_tiny"]
            + ["data.roots=[.]"],
            "--init turbo is a sam_med3d_turbo, which cannot fit model.name=sam_med3d_tiny: "
            "fine-tune it with model.name=sam_med3d_turbo",
        ),
        (["--config", "tiny_cpu", "data.roots=[nowhere]"], "dataset folder not found: nowhere"),
    ],
)
def test_train_errors_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert _train(*args) == 2
    err = _err(capsys)
    assert err.startswith("error:") and message in err


def test_missing_or_incompatible_init_exit_2(tmp_path, dataset, capsys):
    base = ["--config", "tiny_cpu", "-o", str(tmp_path / "r")]
    assert _train(*base, "--init", str(tmp_path / "missing.pth"), f"data.roots=[{dataset}]") == 2
    assert "init checkpoint not found" in _err(capsys)
    small = save_checkpoint(build_model("sam_med3d_small"), tmp_path / "small.pth")
    assert _train(*base, "--init", str(small), f"data.roots=[{dataset}]") == 2
    err = _err(capsys)
    assert "small.pth does not fit the model: it was saved for another architecture" in err
    assert err.endswith("; it is a sam_med3d_small: fine-tune it with model.name=sam_med3d_small")
    # the bundled model under the published regime's model: the config that fits it
    assert _train(*base, "--init", "default", f"data.roots=[{dataset}]") == 2
    assert _err(capsys) == (
        "error: --init default is a sam_med3d_demo, which cannot fit model.name=sam_med3d_tiny: "
        "fine-tune it with --config finetune_default"
    )
    from sammed3d.paths import BUNDLED_CHECKPOINT  # the same file by its path: read, then told

    assert _train(*base, "--init", str(BUNDLED_CHECKPOINT), f"data.roots=[{dataset}]") == 2
    assert _err(capsys).endswith(
        "; it is a sam_med3d_demo: fine-tune it with --config finetune_default"
    )
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body>Sign in to continue</body></html>",  # a login page
        b"PK\x03\x04" + bytes(200),  # a truncated zip archive
        "torch_without_sam_keys",
    ],
)
def test_init_that_is_not_a_checkpoint_fails_like_segment(tmp_path, dataset, capsys, content):
    """``train --init FILE`` and ``segment --checkpoint FILE`` read FILE with one reader and say
    the same thing about it."""
    from sammed3d.io import Volume, write_volume

    bad = tmp_path / "model.pth"
    if content == "torch_without_sam_keys":
        torch.save({"model_state_dict": {"head.weight": torch.zeros(2)}}, bad)
    else:
        bad.write_bytes(content)
    array = np.random.default_rng(0).normal(100.0, 20.0, (20, 18, 12)).astype(np.float32)
    image = write_volume(Volume(array, (1.0, 1.0, 1.0)), tmp_path / "image.nii.gz")
    argv = ["segment", str(image), "-p", "5", "5", "5", "--checkpoint", str(bad)]
    assert main([*argv, "-o", str(tmp_path / "mask.nii.gz")]) == 2
    from_segment = _err(capsys)
    run = tmp_path / "run"
    assert _train("--config", "tiny_cpu", "--init", str(bad), "-o", str(run),
                  f"data.roots=[{dataset}]") == 2  # fmt: skip
    from_train = _err(capsys)
    assert from_segment.startswith(f"error: {bad} ") and from_train == from_segment
    assert not (run / "checkpoints").exists()


def test_print_config(capsys):
    assert _train("--config", "default", "--print-config", "optim.lr=8e-5") == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == pytest.approx(8e-5) and cfg["train"]["num_clicks"] == 11


def test_overrides_on_both_sides_of_an_option(capsys):
    assert _train("--config", "default", "optim.lr=8e-5", "--print-config",
                  "train.num_clicks=9") == 0  # fmt: skip
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == pytest.approx(8e-5) and cfg["train"]["num_clicks"] == 9
    with pytest.raises(SystemExit) as exc:
        _train("--config", "default", "optim.lr=8e-5", "--print-config", "--no-such-flag")
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.pth"), str(tmp_path / "o.pth")]) == 2
    assert "checkpoint not found" in _err(capsys)
    assert main(["export", str(tmp_path), str(tmp_path / "o.pth")]) == 2
    assert "no checkpoint in run folder" in _err(capsys)
    src = save_checkpoint(build_model("sam_med3d_tiny"), tmp_path / "a.pth")
    assert main(["export", str(src), str(src), "--overwrite"]) == 2
    assert "is the input checkpoint" in _err(capsys)


def test_cache_only(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    assert (
        _train("--config", "tiny_cpu", "--cache-only", "-o", str(run), f"data.roots=[{dataset}]")
        == 0
    )
    assert "cache ready: 2 training targets" in capsys.readouterr().out
    assert list((run / "cache").glob("*/manifest.jsonl"))
    assert not (run / "checkpoints").exists()


def test_resume_falls_back_to_an_older_checkpoint_when_the_newest_is_corrupt(
    tmp_path, dataset, capsys
):
    run = tmp_path / "run"
    common = [f"data.roots=[{dataset}]", "train.batch_size=1", "train.epochs=2"]
    assert _train("--config", "tiny_cpu", "-o", str(run), *common, "run.save_every_steps=1",
                  "run.stop_after_steps=2") == 0  # fmt: skip
    ckpts = run / "checkpoints"
    newest = ckpts / "step_00000002.pth"
    assert newest.exists() and (ckpts / "step_00000001.pth").exists()
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 3])  # a crash while it was copied
    capsys.readouterr()
    assert _train("--resume", str(run), "run.stop_after_steps=null") == 0
    captured = capsys.readouterr()
    assert "resuming from the older checkpoint step_00000001.pth" in captured.err
    assert "step_00000002.pth" in captured.err
    assert "finished: epoch 2, step 4" in captured.out
    # nothing readable at all: a one-line error naming the newest problem
    for p in ckpts.glob("*.pth"):
        p.write_bytes(b"garbage")
    assert _train("--resume", str(run)) == 2
    assert "no usable checkpoint" in _err(capsys)


def test_allow_unsafe_pickle_is_accepted_by_train(tmp_path, dataset, capsys):
    import argparse

    state = build_model("sam_med3d_tiny").state_dict()
    pickled = tmp_path / "pickled.pth"
    torch.save({"model_state_dict": state, "args": argparse.Namespace(lr=1e-4)}, pickled)
    base = ["--config", "tiny_cpu", "--init", str(pickled), f"data.roots=[{dataset}]"]
    base += ["train.epochs=1", "train.batch_size=1"]
    assert _train(*base, "-o", str(tmp_path / "a")) == 2
    err = _err(capsys)
    assert "--allow-unsafe-pickle" in err or "allow_unsafe_pickle" in err
    assert _train(*base, "-o", str(tmp_path / "b"), "--allow-unsafe-pickle") == 0
    cfg = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"]["allow_unsafe_pickle"] is True


def test_a_case_on_another_grid_is_reported_once(tmp_path, capsys):
    """Semantic runs printed the grid mismatch twice (when the cache failed the case, then
    when the case was left out); a run that reuses the cache prints it once as well."""
    from sammed3d.io import Volume, read_volume, write_volume

    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=3)
    path = data / "labelsTr" / "case_001.nii.gz"
    label = read_volume(path)
    write_volume(Volume(label.array, (2.0, 1.5, 1.5), label.origin, label.direction), path)
    args = ["--config", "tiny_cpu", "-o", str(tmp_path / "run"), "task.kind=semantic"]
    for _ in ("build", "reuse"):
        assert _train(*args, f"data.roots=[{data}]", "--cache-only") == 0
        captured = capsys.readouterr()
        said = [line for line in captured.err.splitlines() if "does not match its image" in line]
        assert len(said) == 1 and "case_001" in said[0], said
        assert "cache ready: 2 training cases" in captured.out
