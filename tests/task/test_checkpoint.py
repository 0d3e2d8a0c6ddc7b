"""Task checkpoints: round trip, provenance, and the one-line refusals between the two kinds."""

from __future__ import annotations

import hashlib

import pytest
import torch

from sammed3d import build_model, load_checkpoint
from sammed3d.build import (
    CheckpointError,
    export_published,
    get_config,
    read_checkpoint,
    save_checkpoint,
)
from sammed3d.task.checkpoint import (
    encoder_state_from_checkpoint,
    load_task_checkpoint,
    read_task_checkpoint,
    resolve_task_checkpoint,
    save_task_checkpoint,
)

from .conftest import tiny_task_model


def test_round_trip(task_checkpoint):
    model = load_task_checkpoint(task_checkpoint)
    reference = tiny_task_model()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert model.spec == reference.spec and model.metadata == {"x": 1}
    obj = torch.load(task_checkpoint, weights_only=True)  # plain values only
    assert obj["format"] == "sammed3d-task" and obj["task"]["classes"] == ["blob", "speck"]


def test_a_task_checkpoint_is_not_a_sam_model(task_checkpoint):
    for load in (load_checkpoint, read_checkpoint):
        with pytest.raises(CheckpointError, match="is a task-model checkpoint") as info:
            load(task_checkpoint)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="task-model checkpoint"):
        encoder_state_from_checkpoint(task_checkpoint, get_config("sam_med3d_tiny"))


def test_a_sam_model_is_not_a_task_checkpoint(tmp_path):
    sam = save_checkpoint(build_model("sam_med3d_tiny"), tmp_path / "sam.pth")
    published = export_published(build_model("sam_med3d_tiny"), tmp_path / "published.pth")
    for path in (sam, published):
        with pytest.raises(CheckpointError, match="is a promptable SAM-Med3D checkpoint"):
            load_task_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="is not a task-model checkpoint"):
        read_task_checkpoint(tmp_path / "other.pth")
    (tmp_path / "page.pth").write_text("<html>not found</html>")
    with pytest.raises(CheckpointError, match="page.pth"):
        load_task_checkpoint(tmp_path / "page.pth")
    with pytest.raises(FileNotFoundError, match="task checkpoint not found"):
        load_task_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize("name", ["default", "turbo"])
def test_a_promptable_model_name_is_named_as_such(name: str, tmp_path, monkeypatch) -> None:
    """``predict --checkpoint default`` said "task checkpoint not found: default"."""
    monkeypatch.chdir(tmp_path)  # no file of that name here
    with pytest.raises(FileNotFoundError, match=rf"^'{name}' names a promptable SAM-Med3D model"):
        load_task_checkpoint(name)


def test_run_folder_resolves_to_its_newest_checkpoint(tmp_path):
    model = tiny_task_model()
    save_task_checkpoint(model, tmp_path / "run" / "checkpoints" / "final.pth")
    assert resolve_task_checkpoint(tmp_path / "run").name == "final.pth"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="without checkpoints"):
        resolve_task_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["ours", "published"])
def test_encoder_weights_and_origin(tmp_path, kind):
    torch.manual_seed(3)
    sam = build_model("sam_med3d_tiny")
    path = tmp_path / f"{kind}.pth"
    (save_checkpoint if kind == "ours" else export_published)(sam, path)
    state, origin = encoder_state_from_checkpoint(str(path), get_config("sam_med3d_tiny"))
    for key, value in sam.image_encoder.state_dict().items():
        assert torch.equal(state[key], value)
    assert origin == {
        "init": "checkpoint",
        "checkpoint": str(path),
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def test_encoder_of_another_architecture_is_refused(tmp_path):
    ours = save_checkpoint(build_model("sam_med3d_small"), tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="another architecture: img_size=128"):
        encoder_state_from_checkpoint(ours, get_config("sam_med3d_tiny"))
    published = export_published(build_model("sam_med3d_small"), tmp_path / "small_pub.pth")
    with pytest.raises(CheckpointError, match="does not fit the model: .*shape mismatch"):
        encoder_state_from_checkpoint(published, get_config("sam_med3d_tiny"))
    torch.save({"model_state_dict": {"backbone.w": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'image_encoder.\\*' keys"):
        encoder_state_from_checkpoint(tmp_path / "other.pth", get_config("sam_med3d_tiny"))


def test_an_encoder_of_another_architecture_names_the_model_to_train_with():
    """`--init default` under a config built for turbo: the error says which model.name fits
    (a new user could not tell from the differing fields alone)."""
    from sammed3d.build import MODEL_REGISTRY, CheckpointError
    from sammed3d.task.checkpoint import encoder_state_from_checkpoint

    with pytest.raises(CheckpointError) as err:
        encoder_state_from_checkpoint("default", MODEL_REGISTRY["sam_med3d_turbo"])
    message = str(err.value)
    assert "its image encoder has another architecture: encoder_embed_dim=192" in message
    assert message.endswith(
        "it is a sam_med3d_demo: train with model.name=sam_med3d_demo to transfer its encoder"
    )
