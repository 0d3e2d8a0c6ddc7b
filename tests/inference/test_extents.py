"""Other extents of a first click (InteractiveSession.extents / choose_extent / next_extent,
SamMed3DPredictor.first_click_extents, and the evaluation's simulated extent choice).

A fake multimask model offers three masks at a first click: a ball of 1 ROI voxel around the
click (the one its scores pick), the clicked bright component (what the oracle model of
``conftest.py`` segments) and a ball of 12 ROI voxels; so every extent has a known mask.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sammed3d.clicks import Click
from sammed3d.evaluation.methods import ModelMethod
from sammed3d.evaluation.metrics import dice
from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.inference.session import RULES
from sammed3d.io import Volume

MAIN, SIZE = 2.0, 32  # a 64 mm ROI


def _scene() -> tuple[Volume, SimpleNamespace]:
    """96^3 mm at 1 mm with a bright ball (radius 5 mm) at (40, 48, 48)."""
    shape = (96, 96, 96)
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    centre = np.array([40.0, 48.0, 48.0])
    dist = np.linalg.norm(grid - centre, axis=-1)
    rng = np.random.default_rng(0)
    img = np.where(dist <= 5.0, 300.0, 100.0) + rng.uniform(0, 8, shape)
    return Volume(img.astype(np.float32), (1.0, 1.0, 1.0)), SimpleNamespace(
        ball=dist <= 5.0, dist=dist, centre=(40, 48, 48)
    )


def _multimask_model(lab, duplicate: bool = False, empty: bool = False, blow_up: bool = False):
    class ExtentModel(lab.OracleModel):
        first_click_multimask = True

        def decode(self, emb, coords, labels, mask_input, multimask_output=False):
            low, iou = super().decode(emb, coords, labels, mask_input, False)
            later = mask_input is not None and bool(mask_input.abs().max() > 0)
            if blow_up and later:  # every later click: the large ball
                multimask_output = True
            elif not multimask_output:
                return low, iou
            comp = self.upsample_logits(low)[0, 0] > 0
            grid = torch.stack(torch.meshgrid(*[torch.arange(self.img_size)] * 3, indexing="ij"))
            dist = (grid - coords[0, 0].round().view(3, 1, 1, 1)).pow(2).sum(0).sqrt()
            small = comp.clone() if duplicate else dist <= 1.0
            if empty:
                small = torch.zeros_like(comp)
            large = (dist <= 12.0) | comp
            masks = torch.stack([small, comp, large]).float()[None] * 20.0 - 10.0
            low = F.interpolate(masks, size=self.low_res_size, mode="trilinear")
            if blow_up and later:
                return low[:, 2:], torch.ones(1, 1)
            return low, torch.tensor([[0.9, 0.3, 0.5]])

    return ExtentModel(img_size=SIZE)


def _session(
    lab, zoom: float = 0.0, duplicate: bool = False, empty: bool = False, fine: float = 0.0
) -> tuple[InteractiveSession, object]:
    vol, scene = _scene()
    model = _multimask_model(lab, duplicate, empty)
    pred = SamMed3DPredictor(
        model, target_spacing=(MAIN,) * 3, zoom_spacing=zoom, fine_zoom_spacing=fine
    )
    session = InteractiveSession(pred)
    session.set_image(vol)
    return session, scene


def _component(lab) -> np.ndarray:
    """The clicked component as the oracle model alone segments it (same lattice)."""
    vol, scene = _scene()
    plain = InteractiveSession(
        SamMed3DPredictor(lab.OracleModel(img_size=SIZE), target_spacing=(MAIN,) * 3)
    )
    plain.set_image(vol)
    return plain.add_point(scene.centre)


def test_extents_smallest_first_and_the_picked_one_is_current(lab):
    session, scene = _session(lab)
    session.add_point(scene.centre)
    found = session.extents()
    assert [e.index for e in found] == [0, 1, 2]
    assert [e.voxels for e in found] == sorted(e.voxels for e in found)
    assert [e.current for e in found] == [True, False, False]  # score 0.9 x stability 1
    assert [e.picked for e in found] == [True, False, False]
    assert [e.model_pick for e in found] == [True, False, False]  # no rule: the same mask
    assert all(e.spacing_mm == MAIN for e in found)
    assert found[0].volume_ml == pytest.approx(found[0].voxels / 1000.0)
    assert found[0].score == pytest.approx(0.9, abs=0.01)
    assert session.voxel_count() == found[0].voxels


def test_choose_extent_gives_that_mask_and_is_undoable(lab):
    session, scene = _session(lab)
    session.add_point(scene.centre)
    first = session.mask.copy()
    chosen = session.choose_extent(1)
    assert chosen.current and chosen.index == 1
    component = _component(lab)
    assert dice(component, scene.ball) > 0.8  # a 5 mm ball on a 2 mm lattice
    assert np.array_equal(session.mask, component)
    found = session.extents()
    assert [e.current for e in found] == [False, True, False]
    assert [e.picked for e in found] == [True, False, False]  # the model's pick stays known
    taken = session.choose_extent(2)
    assert session.voxel_count() > 20 * scene.ball.sum()
    assert taken.voxels == session.voxel_count()  # the mask as taken
    assert session.undo() and np.array_equal(session.mask, component)
    assert session.undo() and np.array_equal(session.mask, first)
    assert session.redo() and session.extents()[1].current


def test_next_extent_cycles_and_wraps_both_ways(lab):
    session, scene = _session(lab)
    session.add_point(scene.centre)
    assert [session.next_extent().index for _ in range(4)] == [1, 2, 0, 1]
    assert [session.next_extent(step=-1).index for _ in range(3)] == [0, 2, 1]


def test_the_next_click_refines_the_chosen_mask(lab):
    session, scene = _session(lab)
    session.add_point(scene.centre)
    session.choose_extent(2)
    chosen = session.low_res_logits.clone()
    model = session.predictor.model
    model.decode_calls.clear()
    session.add_point((40, 48, 60), positive=False)  # inside the large ball only
    assert torch.equal(model.decode_calls[-1]["mask_input"], chosen)
    assert not session.mask[40, 48, 60] and session.mask[scene.centre]
    with pytest.raises(ValueError, match="first click only; object 1 has 2 click"):
        session.extents()


def test_nearly_equal_masks_are_listed_once(lab):
    session, scene = _session(lab, duplicate=True)
    session.add_point(scene.centre)
    found = session.extents()
    assert len(found) == 2 and found[0].current  # the kept twin is the current one


def test_an_empty_mask_is_no_extent(lab):
    session, scene = _session(lab, empty=True)
    session.add_point(scene.centre)  # stability 0 for the empty output: the large one is picked
    found = session.extents()
    assert len(found) == 2 and all(e.voxels > 0 for e in found)
    assert [e.picked for e in found] == [False, True]


def test_zoomed_objects_list_both_lattices(lab):
    session, scene = _session(lab, zoom=1.0)
    session.add_point(scene.centre)
    assert session.predictor.is_zoomed(session.tiles[0])  # a small first mask zooms in
    found = session.extents()
    spacings = {e.spacing_mm for e in found}
    assert spacings == {1.0, MAIN}
    assert [e.spacing_mm for e in found if e.current] == [1.0]
    assert [e.spacing_mm for e in found if e.picked] == [1.0]
    main = next(e for e in found if e.spacing_mm == MAIN and e.voxels > 20 * scene.ball.sum())
    session.choose_extent(main.index)
    assert not session.predictor.is_zoomed(session.tiles[0])
    assert session.voxel_count() == main.voxels


def test_a_fine_zoom_lattice_offers_its_masks_too_and_an_object_can_live_there(lab):
    session, scene = _session(lab, zoom=1.0, fine=0.5)
    pred = session.predictor
    session.add_point(scene.centre)
    assert [t.roi.lattice.grid.spacing for t in session.tiles] == [(1.0,) * 3]  # zoom-in as before
    found = session.extents()
    assert {e.spacing_mm for e in found} == {0.5, 1.0, MAIN}
    assert [e.spacing_mm for e in found if e.picked] == [1.0]  # the model's pick
    # the fine lattice's large mask: a 12-voxel ball there is 6 mm (its clicked-component
    # mask duplicates the zoom lattice's and is offered once)
    large = max((e for e in found if e.spacing_mm == 0.5), key=lambda e: e.voxels)
    mask = _mask_of(session, large.index)
    assert dice(mask, scene.dist <= 6.0) > 0.9
    assert pred.is_zoomed(session.tiles[0]) and len(session.tiles) == 1
    assert session.tiles[0].roi.lattice.grid.spacing == (0.5,) * 3
    # a later click inside stays on the fine lattice, its logits the prompt
    prompt = session.low_res_logits.clone()
    session.add_point((42, 48, 48))
    assert session.tiles[0].roi.lattice.grid.spacing == (0.5,) * 3
    torch.testing.assert_close(pred.model.decode_calls[-1]["mask_input"], prompt)
    assert session.undo() and np.array_equal(session.mask, mask)
    # the ROIs of the three lattices do not share cached embeddings or intensities
    assert {key[0] for key in pred._embeddings} == {0, 1, 2}
    # off without zoom-in (from a checkpoint), an error when asked for
    assert SamMed3DPredictor(pred.model, target_spacing=(MAIN,) * 3).fine_zoom_spacing == 0.0
    with pytest.raises(ValueError, match="needs zoom-in, which is off"):
        SamMed3DPredictor(pred.model, target_spacing=(MAIN,) * 3, fine_zoom_spacing=0.5)
    with pytest.raises(ValueError, match="must be finer than zoom_spacing"):
        SamMed3DPredictor(
            pred.model, target_spacing=(MAIN,) * 3, zoom_spacing=1.0, fine_zoom_spacing=1.0
        )
    with pytest.raises(ValueError, match="fine_zoom_spacing must be 0"):
        SamMed3DPredictor(pred.model, zoom_spacing=1.0, fine_zoom_spacing=float("nan"))


def test_the_fine_zoom_setting_comes_from_the_checkpoint(lab):
    model = _multimask_model(lab)
    model.config = SimpleNamespace(zoom_spacing=1.0, fine_zoom_spacing=0.5)
    assert SamMed3DPredictor(model, target_spacing=(MAIN,) * 3).fine_zoom_spacing == 0.5
    # the checkpoint's fine lattice without its zoom-in, or not finer than it: off
    assert SamMed3DPredictor(model, zoom_spacing=0).fine_zoom_spacing == 0.0
    model.config = SimpleNamespace(zoom_spacing=0.5, fine_zoom_spacing=0.75)
    assert SamMed3DPredictor(model, target_spacing=(MAIN,) * 3).fine_zoom_spacing == 0.0


def _mask_of(session: InteractiveSession, index: int) -> np.ndarray:
    session.choose_extent(index)
    return session.mask.copy()


def test_a_first_click_is_decoded_once_for_its_pick_and_its_extents(lab, monkeypatch):
    from sammed3d.inference import predictor as predictor_module

    def run(kept: int):
        monkeypatch.setattr(predictor_module, "FIRST_DECODES_KEPT", kept)
        session, scene = _session(lab, zoom=1.0)
        model = session.predictor.model
        session.add_point(scene.centre)
        clicked = len(model.decode_calls)
        found = session.extents()
        masks = []
        for extent in found:
            session.choose_extent(extent.index)
            masks.append(session.mask.copy())
        return session, len(model.decode_calls) - clicked, found, masks

    session, decoded, found, masks = run(predictor_module.FIRST_DECODES_KEPT)
    assert decoded == 0  # both lattices' multimask outputs were kept from the click
    _, again, fresh, fresh_masks = run(0)  # nothing kept: decoded again
    assert again == 2
    assert found == fresh
    assert all(np.array_equal(a, b) for a, b in zip(masks, fresh_masks, strict=True))
    # a new image forgets them: its first click is decoded anew
    vol, scene = _scene()
    session.set_image(Volume(vol.array[::-1].copy(), vol.spacing))
    model = session.predictor.model
    calls = len(model.decode_calls)
    session.add_point(scene.centre)
    session.extents()
    assert len(model.decode_calls) > calls


def test_extent_errors_are_one_line(lab):
    session, scene = _session(lab)
    with pytest.raises(ValueError, match="no object: click first"):
        session.extents()
    session.new_object()
    with pytest.raises(ValueError, match="object 1 has 0 click"):
        session.extents()
    session.add_point(scene.centre)
    for bad in (3, -1, 1.0, True):
        with pytest.raises(ValueError, match="extent index must be"):
            session.choose_extent(bad)
    with pytest.raises(ValueError, match="no object 7"):
        session.extents(7)
    vol, _ = _scene()
    plain = InteractiveSession(
        SamMed3DPredictor(lab.OracleModel(img_size=SIZE), target_spacing=(MAIN,) * 3)
    )
    plain.set_image(vol)
    plain.add_point(scene.centre)
    with pytest.raises(ValueError, match="decodes one mask per click"):
        plain.extents()


@pytest.mark.parametrize(("zoom", "fine", "most"), [(0.0, 0.0, 3), (1.0, 0.0, 6), (1.0, 0.5, 9)])
def test_max_extents_bounds_the_list_before_any_image(lab, zoom, fine, most):
    session, scene = _session(lab, zoom=zoom, fine=fine)
    assert session.predictor.max_extents() == most  # 3 outputs on each lattice
    session.add_point(scene.centre)
    assert 1 <= len(session.extents()) <= most
    plain = SamMed3DPredictor(lab.OracleModel(img_size=SIZE), target_spacing=(MAIN,) * 3)
    assert plain.max_extents() == 0


def test_simulated_extent_choice_takes_the_best_dice(lab):
    session, scene = _session(lab)
    method = ModelMethod(session, choose_extent=True)
    assert method.uses_gt and method.settings["choose_extent"] is True
    vol, _ = _scene()
    method.set_image(vol)
    method.start_target(roi_mask=None, gt=scene.ball)
    mask = method.add_click(Click(scene.centre, True))
    assert np.array_equal(mask, _component(lab))  # not the small ball the model picked
    plain = ModelMethod(_session(lab)[0])
    plain.set_image(vol)
    plain.start_target(roi_mask=None)
    assert dice(plain.add_click(Click(scene.centre, True)), scene.ball) < 0.5
    with pytest.raises(ValueError, match="needs the ground truth"):
        method.start_target(roi_mask=None, gt=None)
    one_mask = InteractiveSession(
        SamMed3DPredictor(lab.OracleModel(img_size=SIZE), target_spacing=(MAIN,) * 3)
    )
    with pytest.raises(ValueError, match="decodes one mask per click"):
        ModelMethod(one_mask, choose_extent=True)


def test_a_low_contrast_pick_gives_way_to_the_sharpest_extent(lab):
    vol, scene = _scene()
    component = _component(lab)
    for threshold, expected in ((0.0, None), (0.5, component)):
        pred = SamMed3DPredictor(
            _multimask_model(lab), target_spacing=(MAIN,) * 3, contrast_guard=threshold
        )
        session = InteractiveSession(pred)
        session.set_image(vol)
        session.add_point(scene.centre)
        found = session.extents()
        if expected is None:  # off: the model's own pick, the small ball inside the bright one
            assert found[0].picked and found[0].current and session.rule_note is None
            assert session.rule is None
            continue
        assert np.array_equal(session.mask, expected)  # the bright ball, not the small one
        assert session.rule_note and "replaced by a sharper one" in session.rule_note
        assert session.rule == "contrast guard"
        assert [e.picked for e in found] == [False, True, False]
        assert [e.current for e in found] == [False, True, False]
        assert session.undo() and not session.clicks  # one undo takes the click back
        assert session.redo() and np.array_equal(session.mask, expected)


@pytest.mark.parametrize(
    ("threshold", "click"),
    [(0.15, (40, 48, 48)), (0.5, (40, 48, 56))],
    ids=["the pick is sharp enough", "no extent is sharper"],
)
def test_the_pick_is_kept(lab, threshold, click):
    # contrasts (seed 0): in the bright ball the small ball 0.18, the bright ball 1.26, the
    # large ball 0.09; outside it the small ball 0.13 and the large one 0.08
    vol, _ = _scene()
    pred = SamMed3DPredictor(
        _multimask_model(lab), target_spacing=(MAIN,) * 3, contrast_guard=threshold
    )
    session = InteractiveSession(pred)
    session.set_image(vol)
    session.add_point(click)
    found = session.extents()
    assert found[0].picked and found[0].current
    assert session.voxel_count() == found[0].voxels
    assert session.rule_note is None


@pytest.mark.parametrize("refine", [0.0, 3.0])
def test_a_later_click_that_blows_the_mask_up_into_a_blur_is_not_taken(lab, refine):
    vol, scene = _scene()
    masks = {}
    for threshold in (0.0, 0.5):
        pred = SamMed3DPredictor(
            _multimask_model(lab, blow_up=True),
            target_spacing=(MAIN,) * 3,
            contrast_guard=threshold,
            refine_boundary=refine,
        )
        session = InteractiveSession(pred)
        session.set_image(vol)
        session.add_point(scene.centre)
        session.choose_extent(1)  # the bright ball (contrast 1.26)
        first = session.mask.copy()
        # the model answers with the large ball (contrast 0.09); the click lies just outside the
        # bright ball, where boundary refinement would take its voxel in
        session.add_point((47, 48, 48))
        masks[threshold] = session.mask.copy()
        assert len(session.clicks) == 2
        if threshold:
            assert np.array_equal(masks[threshold], first)  # kept: the click goes on with the next
            assert session.rule_note and "was not taken" in session.rule_note
            assert session.rule == "contrast guard"
            assert session.undo() and len(session.clicks) == 1
            assert np.array_equal(session.mask, first)
    assert masks[0.0].sum() > 20 * masks[0.5].sum()  # off: the blur is taken


def test_the_edge_check_refuses_a_later_click_whose_mask_loses_its_edges(lab):
    vol, scene = _scene()
    masks = {}
    for check in ("none", "edges"):
        pred = SamMed3DPredictor(
            _multimask_model(lab, blow_up=True), target_spacing=(MAIN,) * 3, later_check=check
        )
        session = InteractiveSession(pred, accumulate_clicks=True)
        session.set_image(vol)
        session.add_point(scene.centre)
        session.choose_extent(2)
        session.choose_extent(1)  # the bright ball: its border is the step edge
        assert session.undo() and session.redo()  # (a redo step to keep)
        session.choose_extent(2)
        assert session.undo()
        first = session.mask.copy()
        model = pred.model
        click = session.add_click((41, 48, 48))  # the model answers with the large ball
        masks[check] = session.mask.copy()
        if check == "none":
            assert len(session.clicks) == 2 and session.rule_note is None
            continue
        assert click.coord == (41, 48, 48)  # the click as given
        assert np.array_equal(masks[check], first)  # refused: the mask as it was
        assert session.clicks == (Click((40, 48, 48), True),)  # and the click not kept
        assert session.rule_note and session.rule_note.startswith("edge check: the positive")
        assert session.rule == "edge check"
        assert "was not taken" in session.rule_note
        # the next click reaches the model without the refused one (and is refused too)
        session.add_click((40, 49, 48))
        assert model.decode_calls[-1]["coords"].shape[1] == 2
        # the refused clicks left the history as it was: a redo, then undo steps
        assert session.redo() and session.extents()[2].current
        assert session.undo() and session.undo() and session.extents()[2].current
        assert session.undo() and [e.current for e in session.extents()] == [True, False, False]
    assert masks["none"].sum() > 20 * masks["edges"].sum()  # off: the blur is taken


def test_the_edge_check_takes_a_later_click_that_keeps_the_edges(lab):
    vol, scene = _scene()
    pred = SamMed3DPredictor(_multimask_model(lab), target_spacing=(MAIN,) * 3, later_check="edges")
    session = InteractiveSession(pred)
    session.set_image(vol)
    session.add_point(scene.centre)
    session.choose_extent(1)
    session.add_click((41, 48, 48))  # the oracle's bright ball again: same edges
    assert len(session.clicks) == 2 and session.rule_note is None
    assert session.undo() and len(session.clicks) == 1


@pytest.mark.parametrize("guard", [0.0, 0.15])
def test_the_edge_pick_takes_the_extent_on_the_strongest_edge(lab, guard):
    vol, scene = _scene()
    component = _component(lab)
    pred = SamMed3DPredictor(
        _multimask_model(lab),
        target_spacing=(MAIN,) * 3,
        contrast_guard=guard,  # 0.15 keeps the model's pick by itself (test above)
        first_pick="edges",
    )
    session = InteractiveSession(pred)
    session.set_image(vol)
    session.add_point(scene.centre)
    # the small ball inside the bright one and the large ball around it cut through flat
    # intensities; the bright ball's border is its step edge
    assert np.array_equal(session.mask, component)
    assert session.rule_note and session.rule_note.startswith("edge pick: ")
    assert session.rule == "edge pick" and session.rule in RULES
    assert session.rule_note.endswith("the model's own mask is extent 0")  # the small ball
    found = session.extents()
    assert [e.picked for e in found] == [False, True, False]
    assert [e.current for e in found] == [False, True, False]
    assert [e.model_pick for e in found] == [True, False, False]  # as the note says
    session.choose_extent(2)  # a choice keeps which mask was whose
    assert [e.model_pick for e in session.extents()] == [True, False, False]
    session.undo()
    assert session.undo() and not session.clicks  # one undo takes the click back
    assert session.rule_note is None and session.rule is None  # it told of the click undone
    assert session.redo() and np.array_equal(session.mask, component)
    session.undo()
    session.add_point(scene.centre)
    assert session.rule_note
    session.choose_extent(0)
    assert session.rule_note is None and session.rule is None  # the mask is chosen now
    session.choose_extent(1)
    session.add_point((41, 48, 48))  # the next click refines the chosen mask
    assert dice(session.mask, component) > 0.9


def test_the_first_click_rules_read_the_image_with_its_spacing(lab, monkeypatch):
    """On thick slices a 3x3x3 block reaches a slice above and below the click: the rules get
    the image's spacing (sammed3d.inference.contrast.axis_steps; a CT trial's one-slice
    lesion got a 4-voxel mask)."""
    from sammed3d.inference import session as module

    vol, scene = _scene()
    thick = Volume(vol.array, (0.8, 0.8, 3.0))
    seen: dict[str, set] = {}
    for name in ("border_contrast", "edge_strength", "click_like_inside"):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.setdefault(_name, set()).add(kwargs.get("spacing"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    pred = SamMed3DPredictor(_multimask_model(lab), target_spacing=(MAIN,) * 3, first_pick="edges")
    session = InteractiveSession(pred)
    session.set_image(thick)
    session.add_point(scene.centre)
    assert seen == {n: {(0.8, 0.8, 3.0)} for n in seen} and len(seen) == 3


def test_the_edge_pick_note_gives_the_reason_that_decided():
    from sammed3d.inference.session import _edge_pick_reason

    # passed over for an inside unlike the click, though its edge was the stronger one
    why, other, better = _edge_pick_reason(0.5, 0.0123, False, True)
    assert why == "its inside is unlike the clicked voxels" and other == "one like them"
    assert better == "edge score 0.0123, the model's mask's 0.5"  # never "0.0x", "sharper"
    assert _edge_pick_reason(0.2, 0.5, True, True) == (
        "",
        "a sharper one",
        ("edge score 2.5x the model's mask's"),
    )
    why, other, better = _edge_pick_reason(0.0, 0.3, True, True)
    assert (
        why == "its border follows no intensity edge"
        and better == "edge score 0.3, the model's mask's 0"
    )


def test_the_edge_pick_keeps_a_pick_on_the_strongest_edge(lab):
    vol, _ = _scene()
    pred = SamMed3DPredictor(_multimask_model(lab), target_spacing=(MAIN,) * 3)
    assert pred.first_pick == "model"  # the fake model has no config: the published rule
    pred = SamMed3DPredictor(
        _multimask_model(lab, duplicate=True), target_spacing=(MAIN,) * 3, first_pick="edges"
    )
    session = InteractiveSession(pred)
    session.set_image(vol)
    session.add_point((40, 48, 48))  # the model's pick is the bright ball itself
    assert session.rule_note is None
    found = session.extents()
    assert next(e for e in found if e.current).picked


def test_a_bad_first_pick_is_a_one_line_error(lab):
    with pytest.raises(ValueError, match="first_pick must be one of model, edges, got 'best'"):
        SamMed3DPredictor(_multimask_model(lab), target_spacing=(MAIN,) * 3, first_pick="best")


def test_the_mask_shown_is_listed_as_the_object_has_it():
    """A first mask that grew through a ROI face is listed with the object's voxels, as
    written, not with its own ROI's (the bundled model, a lateral ventricle of the demo
    volume: 2 ROIs)."""
    from sammed3d.demo import demo_assets
    from sammed3d.io import read_volume

    pred = SamMed3DPredictor.from_checkpoint(None)
    session = InteractiveSession(pred)
    session.set_image(read_volume(demo_assets()[0]), modality="MR")
    session.add_click((59, 91, 53))
    assert len(session.tiles) > 1  # grown through a face: its own ROI's mask differs
    current = next(e for e in session.extents() if e.current)
    assert current.voxels == session.voxel_count()
    size = float(np.prod(pred.volume.spacing)) / 1000.0
    assert current.volume_ml == pytest.approx(session.voxel_count() * size)


def test_an_extent_listed_is_written_with_the_voxels_it_lists_as_taken(caplog):
    """The edge pick grows every extent at the click, so each is listed with the voxels it is
    written with when taken (the bundled model on the demo volume: the largest mask grows
    into more ROIs), and growing an extent that is only listed warns of nothing."""
    import logging

    from sammed3d.demo import demo_assets
    from sammed3d.io import read_volume

    pred = SamMed3DPredictor.from_checkpoint(None)
    session = InteractiveSession(pred)
    session.set_image(read_volume(demo_assets()[0]), modality="MR")
    with caplog.at_level(logging.INFO, logger="sammed3d"):
        session.add_click((119, 143, 119))  # a corner: its larger masks reach ROI faces
    assert not [r for r in caplog.records if "ROI extension stopped" in r.getMessage()]
    session.reset()
    session.set_image(read_volume(demo_assets()[0]), modality="MR")
    session.add_click((60, 72, 60))
    found = session.extents()
    assert all(e.taken_voxels is not None for e in found)
    grown = [e for e in found if e.taken_voxels != e.voxels]
    assert grown and not any(e.current for e in grown)
    for extent in found:
        session.choose_extent(extent.index)
        assert session.voxel_count() == extent.taken_voxels


def test_a_small_extent_taken_on_the_main_lattice_moves_to_the_zoom_lattice_at_the_next_click(lab):
    session, scene = _session(lab, zoom=1.0)
    pred = session.predictor
    session.add_point(scene.centre)
    ball = int(scene.ball.sum())
    main = [e for e in session.extents() if e.spacing_mm == MAIN]
    component = min(main, key=lambda e: abs(e.voxels - ball))
    session.choose_extent(component.index)
    chosen = session.tiles[0]
    assert not pred.is_zoomed(chosen)
    shown = session.mask
    # the next click is predicted in the zoomed ROI of the first click, with the chosen
    # tile's logits resampled there as its prompt
    zoomed = pred.enter_zoom(chosen, scene.centre, (42, 48, 48))
    assert zoomed is not None and pred.is_zoomed(zoomed)
    assert zoomed.roi == pred._zoom_lattice.roi_at(scene.centre, pred.roi_size)
    mask = session.add_point((42, 48, 48))
    assert pred.is_zoomed(session.tiles[0]) and len(session.tiles) == 1
    torch.testing.assert_close(pred.model.decode_calls[-1]["mask_input"], zoomed.low_res_logits)
    assert mask[scene.dist <= 4.0].all() and not mask[scene.dist >= 6.5].any()
    session.undo()  # one undo step: the chosen main-lattice mask again
    assert not pred.is_zoomed(session.tiles[0])
    np.testing.assert_array_equal(session.mask, shown)


def test_a_large_extent_taken_on_the_main_lattice_stays_there(lab):
    session, scene = _session(lab, zoom=1.0)
    pred = session.predictor
    session.add_point(scene.centre)
    large = max(session.extents(), key=lambda e: e.voxels)
    assert large.spacing_mm == MAIN
    session.choose_extent(large.index)
    assert pred.enter_zoom(session.tiles[0], scene.centre, (42, 48, 48)) is None
    session.add_point((42, 48, 48))
    assert not pred.is_zoomed(session.tiles[0])
