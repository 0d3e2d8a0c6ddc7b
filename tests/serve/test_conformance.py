"""Conformance: the unmodified PyPI ``nninteractive-client`` drives ``sammed3d serve``.

The server is the real command (``python -m sammed3d serve``) in a subprocess on a
loopback port. Every mask the client's target buffer receives must equal, voxel for voxel,
the mask of an :class:`~sammed3d.InteractiveSession` run here on the same checkpoint with
the same clicks.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

pytest.importorskip("nnInteractive.inference.remote")

from nnInteractive.inference.remote import (  # noqa: E402
    SessionExpiredError,
    nnInteractiveRemoteInferenceSession,
)

from sammed3d.build import load_checkpoint  # noqa: E402
from sammed3d.inference import InteractiveSession, SamMed3DPredictor  # noqa: E402
from sammed3d.serve.orientation import protocol_volume  # noqa: E402
from tests.serve.helpers import cli_server, phantom  # noqa: E402

SPACING = [2.0, 1.5, 1.2]


def reference_session(checkpoint) -> InteractiveSession:  # noqa: ANN001
    session = InteractiveSession(SamMed3DPredictor(load_checkpoint(checkpoint)))
    image = phantom()
    session.set_image(protocol_volume(image[None], {"spacing": SPACING}, "SPL"))
    return session


def test_client_drives_server_like_the_python_session(tiny_checkpoint) -> None:
    threads = str(torch.get_num_threads())
    image = phantom()
    ref = reference_session(tiny_checkpoint)
    with cli_server("--checkpoint", str(tiny_checkpoint), "--threads", threads) as (url, _):
        client = nnInteractiveRemoteInferenceSession(url)
        try:
            # capabilities
            assert client.supported_interactions["points"] is True
            assert not any(
                client.supported_interactions[k] for k in ("bbox2d", "bbox3d", "scribble", "lasso")
            )
            assert client.supports_undo is True
            assert client.supports_initial_label is False
            assert client.license == "!!MISSING!!"  # a custom checkpoint: licence unknown
            assert client.idle_timeout_seconds > 0 and client.liveness_timeout_seconds > 0

            client.set_image(image[None], {"spacing": SPACING})
            assert client.original_image_shape == (1, *image.shape)
            buffer = np.zeros(image.shape, dtype=np.uint8)
            client.set_target_buffer(buffer)

            def check(expected: np.ndarray) -> None:
                np.testing.assert_array_equal(buffer.astype(bool), expected)
                assert set(np.unique(buffer)) <= {0, 1}

            # positive, negative, positive
            clicks = [((17, 20, 25), True), ((19, 23, 30), False), ((12, 16, 20), True)]
            sizes = []
            for point, positive in clicks:
                bbox = client.add_point_interaction(point, include_interaction=positive)
                expected = ref.add_point(point, positive=positive)
                check(expected)
                sizes.append(int(expected.sum()))
                if bbox is not None:  # the reply carries only the changed box
                    for (lo, hi), n in zip(bbox, image.shape, strict=True):
                        assert 0 <= lo < hi <= n
            assert 0 < sizes[0] < image.size, "the tiny model must give a non-trivial mask"
            assert len(set(sizes)) > 1, "the clicks must change the mask"

            # undo (twice), each equal to the session's undo
            for _ in range(2):
                assert client.undo() is True
                assert ref.undo()
                check(ref.mask)

            # queued click, then predict
            assert client.add_point_interaction((12, 16, 20), True, run_prediction=False) is None
            check(ref.mask)  # nothing ran yet
            client._predict()
            check(ref.add_point((12, 16, 20)))
            assert client._predict() is None  # nothing queued

            # reset: the client zeroes its buffer, the next click starts a new object
            client.reset_interactions()
            assert not buffer.any()
            ref.reset()
            assert client.undo() is False
            client.add_point_interaction((20, 18, 28), include_interaction=True)
            check(ref.add_point((20, 18, 28)))

            # autozoom off is accepted (ROI extension off)
            client.set_do_autozoom(False)
            assert client.do_autozoom is False

            # liveness / lease endpoints
            assert client.heartbeat() > 0
            assert client.lease_status()["idle_timeout_seconds"] == client.idle_timeout_seconds
            assert client.ping()
            token = client._lease_token
        finally:
            client.close()  # releases the lease

        # the released lease is gone (410) and the server still serves
        gone = httpx.post(f"{url}/heartbeat", headers={"X-Lease-Token": token})
        assert gone.status_code == 410
        assert "claim" in gone.json()["detail"]
        other = nnInteractiveRemoteInferenceSession(url)
        try:
            httpx.post(f"{url}/release", headers={"X-Lease-Token": other._lease_token})
            with pytest.raises(SessionExpiredError):
                other.heartbeat()
        finally:
            other.close()


def test_server_at_capacity_answers_503_with_retry_after(tiny_checkpoint) -> None:
    from nnInteractive.inference.remote import ServerAtCapacityError

    with cli_server("--checkpoint", str(tiny_checkpoint), "--max-sessions", "1") as (url, _):
        with nnInteractiveRemoteInferenceSession(url):
            resp = httpx.post(f"{url}/claim")
            assert resp.status_code == 503
            assert resp.headers["Retry-After"]
            with pytest.raises(ServerAtCapacityError):
                nnInteractiveRemoteInferenceSession(url)
        with nnInteractiveRemoteInferenceSession(url) as client:  # the slot is free again
            assert client.supported_interactions["points"]
