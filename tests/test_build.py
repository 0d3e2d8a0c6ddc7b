"""Registry, state-dict contract with the released model, checkpoint loading and errors."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest
import torch

from sammed3d import CheckpointError, ModelConfig, build_model, load_checkpoint, save_checkpoint
from sammed3d.build import (
    MODEL_REGISTRY,
    _build_sam3d,
    export_published,
    infer_config,
    settings_beyond_weights,
)


def _meta_vit_b():
    with torch.device("meta"):
        return _build_sam3d(MODEL_REGISTRY["sam_med3d_turbo"])


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", text))


def test_state_dict_matches_released_keys(fixtures_dir):
    rows = (
        (fixtures_dir / "sammed3d_vitb_state_dict_keys.tsv")
        .read_text(encoding="utf-8")
        .strip()
        .splitlines()
    )
    expected = [(name, _parse_shape(shape)) for name, shape in (r.split("\t") for r in rows[1:])]
    assert len(expected) == 324
    sd = _meta_vit_b().state_dict()
    got = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert got == expected  # names, shapes and order
    assert sum(v.numel() for v in sd.values()) == 100_509_616


def test_parameter_counts():
    model = _meta_vit_b()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == 100_509_232
    assert count(model.image_encoder) == 92_924_928
    assert count(model.prompt_encoder) == 8_668
    assert count(model.mask_decoder) == 7_575_636


def test_infer_config_of_released_layout():
    assert infer_config(_meta_vit_b().state_dict()) == MODEL_REGISTRY["sam_med3d"]


@pytest.mark.parametrize("name", ["sam_med3d_small", "sam_med3d_tiny"])
def test_infer_config_of_registered_variants(name):
    model = build_model(name)
    assert infer_config(model.state_dict()) == MODEL_REGISTRY[name]


def test_published_format_and_prefix_and_bare(tmp_path, tiny_model):
    sd = tiny_model.state_dict()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        ref = tiny_model.image_encoder(x)
    variants = {
        "published.pth": {"model_state_dict": sd, "epoch": 3},
        "ddp.pth": {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "bare.pth": sd,
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        model = load_checkpoint(tmp_path / name)
        assert model.config == MODEL_REGISTRY["sam_med3d_tiny"]
        with torch.inference_mode():
            assert torch.equal(model.image_encoder(x), ref), name
    assert load_checkpoint(tmp_path / "published.pth").metadata["epoch"] == 3


def test_own_format_round_trip(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "sub" / "ours.pth", metadata={"note": "x"})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "sammed3d" and "model_state_dict" in raw
    model = load_checkpoint(path)
    assert model.metadata == {"note": "x"}
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not list(tmp_path.glob("sub/.*tmp"))  # no temp file left behind


def test_own_format_keeps_non_inferable_config(tmp_path):
    cfg = ModelConfig(
        img_size=64, encoder_embed_dim=48, encoder_depth=1, encoder_num_heads=2,
        encoder_global_attn_indexes=(0,), prompt_embed_dim=48, decoder_num_heads=4,
        decoder_mlp_dim=64,
    )  # fmt: skip
    path = save_checkpoint(build_model(cfg), tmp_path / "c.pth")
    assert load_checkpoint(path).config == cfg


def test_export_published(tmp_path, tiny_model):
    path = export_published(tiny_model, tmp_path / "pub.pth")
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["model_state_dict"]
    assert load_checkpoint(path).config == MODEL_REGISTRY["sam_med3d_tiny"]


def test_settings_beyond_weights_names_what_a_bare_state_dict_loses(tmp_path):
    """Published architectures lose nothing; a behaviour field or a decoder head count other
    than the released 8 is named, and is indeed lost when only the weights are written."""
    assert settings_beyond_weights(build_model("sam_med3d_tiny")) == ()
    base = dataclasses.replace(MODEL_REGISTRY["sam_med3d_tiny"])
    cfg = dataclasses.replace(base, decoder_num_heads=4, first_click_multimask=True, rim_edit=3.0)
    model = build_model(cfg)
    lost = settings_beyond_weights(model)
    assert lost == ("decoder_num_heads", "first_click_multimask", "rim_edit")
    reloaded = load_checkpoint(export_published(model, tmp_path / "bare.pth")).config
    assert all(getattr(reloaded, name) != getattr(cfg, name) for name in lost)


def test_build_model_with_checkpoint(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "t.pth")
    model = build_model("sam_med3d_tiny", checkpoint=path)
    assert torch.equal(
        model.mask_decoder.iou_token.weight, tiny_model.mask_decoder.iou_token.weight
    )
    with pytest.raises(CheckpointError, match="does not fit the model: it was saved for another"):
        build_model("sam_med3d_small", checkpoint=path)
    published = export_published(tiny_model, tmp_path / "published.pth")  # no recorded config
    with pytest.raises(CheckpointError, match="does not fit the model.*shape mismatch"):
        build_model("sam_med3d_small", checkpoint=published)
    # a recorded architecture that differs only where no shape shows it is refused too
    heads = dataclasses.replace(tiny_model.config, decoder_num_heads=4)
    other = save_checkpoint(build_model(heads), tmp_path / "heads.pth")
    with pytest.raises(CheckpointError, match=r"decoder_num_heads=4 \(expected 8\)"):
        build_model("sam_med3d_tiny", checkpoint=other)


def test_loaders_record_the_file_and_resolve_the_checkpoint_argument_once(
    tmp_path, tiny_model, monkeypatch
):
    from sammed3d import paths

    path = save_checkpoint(tiny_model, tmp_path / "t.pth")
    seen = []
    require = paths.require_checkpoint
    monkeypatch.setattr(
        paths, "require_checkpoint", lambda arg=None: seen.append(arg) or require(arg)
    )
    assert load_checkpoint(str(path)).checkpoint_path == path
    assert build_model("sam_med3d_tiny", checkpoint=path).checkpoint_path == path
    assert seen == [str(path), path]
    monkeypatch.setenv("SAMMED3D_CHECKPOINT", str(path))
    assert load_checkpoint(None).checkpoint_path == path  # None: the default checkpoint


def test_one_device_rule_for_the_api(monkeypatch):
    from sammed3d.build import resolve_model_device
    from sammed3d.devices import DeviceError

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    auto = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_model_device("auto") == auto
    assert resolve_model_device(None) == auto
    assert resolve_model_device(" CPU ") == torch.device("cpu")
    assert resolve_model_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_model_device("meta") == torch.device("meta")  # shape-only models pass
    assert resolve_model_device(torch.device("meta")) == torch.device("meta")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_model_device("tpu")
    assert next(build_model("sam_med3d_tiny", device="auto").parameters()).device == auto
    if torch.version.cuda is None:
        with pytest.raises(DeviceError, match="no CUDA support"):
            build_model("sam_med3d_tiny", device="cuda")


def test_published_format_checkpoint_loads_weights_only(small_checkpoint):
    model = load_checkpoint(small_checkpoint)
    assert model.config.encoder_embed_dim == 96 and not model.training


# ---- errors --------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def _write_not_checkpoints(folder, good: bytes) -> dict[str, tuple[object, str]]:
    """Files that are not checkpoints, and the words their message must contain."""
    import os
    import pickle

    cases = {
        # what a failed download from a file host saves under the checkpoint's name
        "html.pth": (
            b"<!DOCTYPE html>\n<html><head><title>Google Drive - Quota exceeded</title></head>"
            b"<body>Too many users have viewed or downloaded this file recently.</body></html>",
            "is an HTML page",
        ),
        "html_no_doctype.pth": (b"\n  <html lang=en><body>Sign in</body></html>", "HTML page"),
        "random.pth": (os.urandom(4096), "not a readable PyTorch checkpoint"),
        "zeros.pth": (b"\x00" * 100, "not a readable PyTorch checkpoint"),
        "plain_pickle.pth": (pickle.dumps({"weights": [1.0, 2.0]}), "plain Python pickle"),
        "plain_pickle_p2.pth": (pickle.dumps({"a": 1}, protocol=2), "plain Python pickle"),
        "truncated.pth": (good[: len(good) // 2], "truncated"),
        "cut_short.pth": (good[:100], "truncated"),
        "empty.pth": (b"", "empty (0 bytes)"),
        "lfs_pointer.pth": (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\n"
            b"size 402000000\n",
            "Git LFS pointer",
        ),
        "text.pth": (b"this is not a checkpoint at all" * 10, "text file"),
    }
    for name, (data, _) in cases.items():
        (folder / name).write_bytes(data)
    return cases


@pytest.mark.parametrize("unsafe", [False, True])
def test_non_checkpoint_files_say_what_they_are(tmp_path, tiny_model, unsafe):
    good = save_checkpoint(tiny_model, tmp_path / "good.pth").read_bytes()
    for name, (_, words) in _write_not_checkpoints(tmp_path, good).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name, allow_unsafe_pickle=unsafe)
        msg = str(err.value)
        assert words in msg, (name, msg)
        assert msg.startswith(str(tmp_path / name)), msg
        assert "\n" not in msg, (name, msg)
        # never advice to load unsafely (torch's own text advises weights_only=False)
        for bad in ("weights_only", "unsafe", "arbitrary code", "trusted source"):
            assert bad not in msg, (name, msg)


def test_html_title_is_quoted(tmp_path):
    path = tmp_path / "sam_med3d_turbo.pth"
    path.write_bytes(b"<html><head><title>Google Drive - Virus scan warning</title></head></html>")
    with pytest.raises(CheckpointError, match="title 'Google Drive - Virus scan warning'"):
        load_checkpoint(path)


def test_truncated_legacy_format(tmp_path, tiny_model):
    torch.save(
        {"model_state_dict": tiny_model.state_dict()},
        tmp_path / "legacy.pth",
        _use_new_zipfile_serialization=False,
    )
    assert load_checkpoint(tmp_path / "legacy.pth").config == MODEL_REGISTRY["sam_med3d_tiny"]
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint(tmp_path / "cut.pth")
    assert "\n" not in str(err.value)


def test_truncated_file(tmp_path, small_checkpoint):
    data = small_checkpoint.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated ZIP/PyTorch archive"):
        load_checkpoint(path)


def test_code_running_pickle_is_refused_without_opt_in_advice(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"model_state_dict": {}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="runs code when the file is loaded") as err:
        load_checkpoint(tmp_path / "evil.pth")
    assert "allow_unsafe_pickle" not in str(err.value)


def test_not_a_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="got list"):
        load_checkpoint(tmp_path / "list.pth")


def test_other_model(tmp_path):
    torch.save({"model_state_dict": {"backbone.conv1.weight": torch.zeros(3)}}, tmp_path / "o.pth")
    with pytest.raises(CheckpointError, match="not a SAM-Med3D checkpoint.*backbone.conv1.weight"):
        load_checkpoint(tmp_path / "o.pth")


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_model):
    sd = dict(tiny_model.state_dict())
    sd.pop("mask_decoder.iou_token.weight")
    sd["mask_decoder.extra.weight"] = torch.zeros(2)
    torch.save({"model_state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing key(s): mask_decoder.iou_token.weight" in msg
    assert "unexpected key(s): mask_decoder.extra.weight" in msg
    assert "\n" not in msg


def test_shape_mismatch_named(tmp_path, tiny_model):
    sd = dict(tiny_model.state_dict())
    sd["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 7)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"no_mask_embed.weight \(1, 7\) vs model \(1, 48\)"):
        load_checkpoint(tmp_path / "bad.pth")


def test_pickled_objects_need_opt_in(tmp_path, tiny_model):
    path = tmp_path / "old.pth"
    torch.save(
        {"model_state_dict": tiny_model.state_dict(), "args": argparse.Namespace(lr=1)}, path
    )
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle=True") as err:
        load_checkpoint(path)
    assert "argparse.Namespace" in str(err.value) and "\n" not in str(err.value)
    model = load_checkpoint(path, allow_unsafe_pickle=True)
    assert model.config == MODEL_REGISTRY["sam_med3d_tiny"]


def test_reference_attn_impl_from_loader(small_checkpoint):
    model = load_checkpoint(small_checkpoint, attn_impl="reference")
    assert model.image_encoder.attn_impl == "reference"


# ---- training run folders and registry names -------------------------------------------------


def _run_folder(root, model):
    """A training run folder as ``sammed3d train`` leaves it: ``checkpoints/final.pth``."""
    run = root / "run"
    save_checkpoint(model, run / "checkpoints" / "final.pth")
    return run


def test_a_training_run_folder_loads_its_newest_checkpoint(tmp_path, tiny_model, caplog):
    from sammed3d.build import resolve_checkpoint_path
    from sammed3d.inference import SamMed3DPredictor

    run = _run_folder(tmp_path, tiny_model)
    final = run / "checkpoints" / "final.pth"
    with caplog.at_level("INFO", logger="sammed3d.build"):
        assert resolve_checkpoint_path(run) == final
    assert f"using {final}" in caplog.text  # says which file it took
    assert resolve_checkpoint_path(run / "checkpoints") == final
    assert load_checkpoint(run).checkpoint_path == final
    # the path segment/evaluate/serve take: the predictor loads through the same reader
    assert SamMed3DPredictor.from_checkpoint(run).checkpoint == final
    # the latest.json pointer wins over final.pth, as for `export`
    step = save_checkpoint(tiny_model, run / "checkpoints" / "step_00000003.pth")
    (run / "checkpoints" / "latest.json").write_text('{"file": "step_00000003.pth"}')
    assert resolve_checkpoint_path(run) == step


def test_a_folder_without_checkpoints_says_what_it_expects(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "no checkpoint in run folder" in msg
    assert "checkpoints/final.pth" in msg and "expected a .pth file" in msg


def test_registered_names():
    from sammed3d.build import registered_names

    assert registered_names(MODEL_REGISTRY["sam_med3d_demo"]) == ["sam_med3d_demo"]
    assert registered_names(MODEL_REGISTRY["sam_med3d_turbo"]) == ["sam_med3d", "sam_med3d_turbo"]
    # behaviour options are not architecture
    tweaked = dataclasses.replace(MODEL_REGISTRY["sam_med3d_tiny"], zoom_spacing=1.5)
    assert registered_names(tweaked) == ["sam_med3d_tiny"]
    custom = dataclasses.replace(MODEL_REGISTRY["sam_med3d_tiny"], encoder_depth=3)
    assert registered_names(custom) == []


def test_model_name_names_the_weights_not_only_the_code_path(tmp_path, tiny_model, monkeypatch):
    """What an evaluation calls the model: the bundled file is sam_med3d_demo, a published
    file by its hash (turbo and the original share an architecture), else the architecture."""
    from sammed3d import weights
    from sammed3d.build import model_name

    assert model_name(load_checkpoint(None)) == "sam_med3d_demo"  # the bundled default
    path = save_checkpoint(tiny_model, tmp_path / "mine.pth")
    assert model_name(load_checkpoint(path)) == "sam_med3d_tiny"
    assert model_name(tiny_model) == "sam_med3d_tiny"  # built in memory: no file
    turbo = dataclasses.replace(weights.WEIGHTS["turbo"], sha256=weights.sha256_of(path))
    monkeypatch.setitem(weights.WEIGHTS, "turbo", turbo)  # as if it were the published file
    assert model_name(load_checkpoint(path)) == "sam_med3d_turbo"
    cfg = dataclasses.replace(
        MODEL_REGISTRY["sam_med3d_tiny"], encoder_depth=1, encoder_global_attn_indexes=(0,)
    )
    assert model_name(build_model(cfg)) == "custom"
