"""ProtocolSession: the nnInteractive calls mapped onto an InteractiveSession (in process)."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from sammed3d.inference import SamMed3DPredictor
from sammed3d.serve.protocol import ProtocolSession, SessionClosed
from tests.serve.helpers import BlobModel, phantom

SPACING = {"spacing": [1.0, 1.0, 1.0]}


@pytest.fixture()
def blob_session() -> ProtocolSession:
    session = ProtocolSession(SamMed3DPredictor(BlobModel(32)), compute_lock=threading.Lock())
    image = phantom((40, 40, 40))
    session.set_image(image[None], SPACING)
    session.set_target_buffer([40, 40, 40], "uint8")
    return session


def apply(buffer: np.ndarray, reply) -> None:  # noqa: ANN001
    if reply.change is not None:
        buffer[reply.change.slices] = reply.change.values


def test_replies_carry_only_the_changed_box(blob_session: ProtocolSession) -> None:
    buffer = np.zeros((40, 40, 40), np.uint8)
    first = blob_session.add_point((20, 20, 20), True)
    assert first.ran and first.change is not None
    apply(buffer, first)
    np.testing.assert_array_equal(buffer.astype(bool), blob_session.session.mask)
    blob = buffer.astype(bool)
    assert 0 < blob.sum() < blob.size
    # the changed box of the first click is the blob's bounding box, not the image
    ii = [np.flatnonzero(blob.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    assert first.change.box == [[int(i[0]), int(i[-1]) + 1] for i in ii]
    # a negative click carves a ball of radius 3 ROI voxels (1.5 mm): a small box
    second = blob_session.add_point((20, 20, 20), False)
    apply(buffer, second)
    np.testing.assert_array_equal(buffer.astype(bool), blob_session.session.mask)
    assert second.change is not None
    assert all(hi - lo <= 12 for lo, hi in second.change.box)
    assert second.change.values.dtype == np.uint8


def test_negative_click_with_nothing_to_remove_is_an_undoable_noop(
    blob_session: ProtocolSession,
) -> None:
    reply = blob_session.add_point((20, 20, 20), False)  # before any positive click
    assert reply.ran and reply.change is None
    assert blob_session.undo().ran  # undoes the no-op
    assert not blob_session.undo().ran  # nothing left


def test_queued_clicks_run_at_predict_and_undo_one_at_a_time(
    blob_session: ProtocolSession,
) -> None:
    buffer = np.zeros((40, 40, 40), np.uint8)
    assert not blob_session.add_point((20, 20, 20), True, run_prediction=False).ran
    assert not blob_session.add_point((21, 20, 20), False, run_prediction=False).ran
    assert not blob_session.session.mask.any()
    assert blob_session.undo().ran  # drops the queued negative click, no prediction
    reply = blob_session.predict()
    apply(buffer, reply)
    assert reply.ran and buffer.sum() > 0
    assert not blob_session.predict().ran
    undo = blob_session.undo()
    apply(buffer, undo)
    assert undo.ran and not buffer.any()


def test_reset_and_autozoom(blob_session: ProtocolSession) -> None:
    blob_session.add_point((20, 20, 20), True)
    blob_session.reset_interactions()
    assert not blob_session.session.mask.any()
    assert not blob_session.undo().ran
    blob_session.set_do_autozoom(False)
    assert blob_session.predictor.extend is False
    blob_session.set_do_autozoom(True)
    assert blob_session.predictor.extend is True


def test_target_buffer_rules() -> None:
    session = ProtocolSession(SamMed3DPredictor(BlobModel(32)), compute_lock=threading.Lock())
    with pytest.raises(ValueError, match="set_image first"):
        session.set_target_buffer([4, 4, 4], "uint8")
    session.set_image(phantom((20, 22, 24))[None], SPACING)
    with pytest.raises(ValueError, match="set_target_buffer"):
        session.add_point((1, 1, 1), True)
    with pytest.raises(ValueError, match="must equal"):
        session.set_target_buffer([24, 22, 20], "uint8")
    with pytest.raises(ValueError, match="bool or an integer"):
        session.set_target_buffer([20, 22, 24], "float32")
    with pytest.raises(ValueError, match="invalid"):
        session.set_target_buffer([20, 22, 24], "nonsense")
    session.set_target_buffer([20, 22, 24], "bool")
    reply = session.add_point((10, 11, 12), True)
    assert reply.change is not None and reply.change.values.dtype == bool


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (
            (40, 1, 1),
            "point at (40, 1, 1) is outside the image: coordinates index the image array as "
            "sent, of shape (40, 40, 40), and must lie in [0, 39] x [0, 39] x [0, 39]",
        ),
        ((-1, 1, 1), "outside"),
        ((1, 2), "3 finite"),
        ((1, float("nan"), 2), "3 finite"),
        ("abc", "3 "),
        ((True, 1, 2), "3 finite"),  # JSON true is no coordinate (the web click's rule too)
        (["1", "2", "3"], "3 finite"),
        ((1, 2, 10**400), "3 finite"),
    ],
)
def test_bad_points(blob_session: ProtocolSession, point, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=re.escape(message)):
        blob_session.add_point(point, True)


def test_closed_session_refuses_work(blob_session: ProtocolSession) -> None:
    blob_session.close()
    assert not blob_session.predictor.is_image_set
    with pytest.raises(SessionClosed):
        blob_session.add_point((1, 1, 1), True)


def test_finite_triple_shared_by_both_click_routes() -> None:
    from sammed3d.serve.protocol import finite_triple
    from sammed3d.serve.web import parse_mm

    assert finite_triple(np.array([1, 2, 3], dtype=np.int16), "c") == (1.0, 2.0, 3.0)
    assert parse_mm([1.5, -2, 0]) == (1.5, -2.0, 0.0)
    with pytest.raises(ValueError, match=r"^mm must be 3 finite numbers, the click's RAS\+"):
        parse_mm([1, 2])
    with pytest.raises(ValueError, match=r"^coordinates must be 3 finite numbers, got \[1, 2\]$"):
        finite_triple([1, 2], "coordinates")
