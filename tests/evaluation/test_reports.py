"""Evaluation outputs: CSV text, the summary's numbers, summary.json, the PNG, atomic writes."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from sammed3d.evaluation import reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(dataset: str, case: str, cls: str, label: int, click: int, dice: float, **kw) -> dict:
    row = {
        "dataset": dataset,
        "case": case,
        "class": cls,
        "label": label,
        "modality": "CT",
        "click": click,
        "strategy": "random",
        "positive": True,
        "coord_i": 1,
        "coord_j": 2,
        "coord_k": 3,
        "click_honoured": True,
        "dice": dice,
        "nsd": None,
        "iou": None,
        "hd95": None,
        "seconds": 0.5 if click == 1 else 0.1,
    }
    row.update(kw)
    return row


#: Three targets in two classes and two datasets, clicks 1..3; Dice per click.
DICE = {
    ("d1", "c1", "liver", 1): (0.5, 0.7, 0.6),
    ("d1", "c2", "liver", 1): (0.3, 0.9, 0.8),
    ("d2", "c1", "kidney", 2): (0.9, 0.95, 1.0),
}


def _rows() -> list[dict]:
    return [
        _row(*key, click=k + 1, dice=d)
        for key, values in DICE.items()
        for k, d in enumerate(values)
    ]


# --------------------------------------------------------------------------------- CSV text


def test_format_rows_writes_one_convention_for_every_value() -> None:
    row = _row("d", "c", "a,b", 3, 1, 1 / 3, positive=False, nsd=math.nan, iou=math.inf)
    row.update(click_honoured=False)
    row.update(hd95=-math.inf, seconds=None, coord_i=np.int64(7))
    text = reports.format_rows([row, {"dataset": "only"}], reports.CSV_FIELDS, header=True)
    lines = text.split("\n")
    assert lines[0] == ",".join(reports.CSV_FIELDS)
    assert lines[1] == 'd,c,"a,b",3,CT,1,random,0,7,2,3,0,0.3333333333333333,nan,inf,-inf,'
    assert lines[2] == "only" + "," * (len(reports.CSV_FIELDS) - 1)  # missing fields: empty
    assert lines[3:] == [""]  # "\n" line ends, no "\r"
    assert reports.format_rows([row], reports.SKIPPED_FIELDS, header=False) == 'd,c,"a,b",3,\n'


def test_append_and_read_back_keep_the_values_and_the_kinds_of_missing(tmp_path: Path) -> None:
    path = tmp_path / "parts" / "per_click.csv"  # the folder is created
    rows = _rows()
    rows[0].update(nsd=math.nan, seconds=math.nan)  # computed and undefined
    rows[1].update(iou=None)  # not computed
    rows[2].update(dice=1 / 3, positive=False, click_honoured=None)  # not recorded
    reports.append_rows(path, rows[:2], reports.CSV_FIELDS)
    reports.append_rows(path, rows[2:], reports.CSV_FIELDS)
    text = path.read_text(encoding="utf-8")
    assert text.count("dataset,case,class") == 1  # one header, written with the first rows
    back = reports.read_rows(path)
    assert len(back) == len(rows)
    assert math.isnan(back[0]["nsd"]) and math.isnan(back[0]["seconds"])
    assert back[1]["iou"] is None and back[1]["hd95"] is None
    assert back[2]["dice"] == 1 / 3 and back[2]["positive"] is False  # exact round trip
    assert back[0]["click_honoured"] is True and back[2]["click_honoured"] is None
    assert back[0]["positive"] is True and back[0]["label"] == 1 and back[0]["coord_k"] == 3
    assert [reports.target_key(r) for r in back] == [reports.target_key(r) for r in rows]
    # reading changes nothing
    assert reports.format_rows(back, reports.CSV_FIELDS, header=True) == text


def test_read_rows_drops_a_truncated_line_and_refuses_a_foreign_csv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "per_click.csv"
    reports.append_rows(path, _rows()[:2], reports.CSV_FIELDS)
    with open(path, "a", encoding="utf-8") as f:
        f.write("d1,c1,liver,1,CT,3,ran")  # an interrupted write
    with caplog.at_level(logging.WARNING):
        rows = reports.read_rows(path)
    assert [r["click"] for r in rows] == [1, 2]
    assert "dropping malformed line 4" in caplog.text
    assert reports.read_rows(tmp_path / "missing.csv") == []
    other = tmp_path / "other.csv"
    other.write_text("dataset,case\nd,c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not an evaluation CSV: missing columns"):
        reports.read_rows(other)


def test_complete_targets_needs_every_click() -> None:
    rows = [r for r in _rows() if not (r["case"] == "c2" and r["click"] == 2)]
    complete = {("d1", "c1", "liver", 1), ("d2", "c1", "kidney", 2)}
    assert reports.complete_targets(rows, 3) == complete
    assert reports.complete_targets(rows, 1) == set(DICE)


# --------------------------------------------------------------------------------- summary


def test_summary_numbers_follow_from_the_rows() -> None:
    rows = _rows()
    for r in rows:
        r["hd95"] = 1.0
    rows[6]["hd95"] = math.inf  # kidney, click 1
    rows[0]["hd95"] = 4.0
    rows[3]["hd95"] = 2.0
    rows[4]["seconds"] = math.nan
    skipped = [{"dataset": "d1", "case": "c3", "class": "liver", "label": 1, "reason": "empty"}]
    summary = reports.build_summary(
        rows,
        [3, 1, 3],
        metrics=("dice", "hd95"),
        config={"seed": 1},
        skipped=skipped,
        failed=[],
    )
    assert summary["clicks"] == [1, 3] and summary["metrics"] == ["dice", "hd95"]
    assert (summary["n_targets"], summary["n_cases"], summary["n_skipped"]) == (3, 3, 1)
    assert summary["skipped"] == skipped and summary["n_failed"] == 0
    assert summary["config"] == {"seed": 1}

    one = summary["overall"]["1"]
    assert one["targets"] == 3
    assert one["dice"]["mean"] == pytest.approx(np.mean([0.5, 0.3, 0.9]))
    assert one["dice"]["std"] == pytest.approx(np.std([0.5, 0.3, 0.9]))  # population std
    assert one["hd95"] == {"mean": 3.0, "std": 1.0, "n": 2, "n_nan": 0, "n_inf": 1}
    assert summary["overall"]["3"]["dice"]["mean"] == pytest.approx(0.8)
    assert "2" not in summary["overall"]  # only the clicks asked for

    liver, kidney = summary["per_class"]["liver"], summary["per_class"]["kidney"]
    assert liver["1"]["dice"]["mean"] == pytest.approx(0.4) and liver["1"]["targets"] == 2
    assert kidney["3"]["dice"]["mean"] == pytest.approx(1.0)
    macro = summary["mean_of_classes"]["1"]["dice"]  # mean of the class means
    assert macro["mean"] == pytest.approx((0.4 + 0.9) / 2) and macro["n"] == 2
    assert summary["per_dataset"]["d1"]["3"]["dice"]["mean"] == pytest.approx(0.7)
    assert summary["per_dataset"]["d2"]["1"]["dice"]["mean"] == pytest.approx(0.9)
    # legacy: each target's best Dice over clicks 1..k
    assert summary["max_dice_up_to"]["1"]["mean"] == pytest.approx(np.mean([0.5, 0.3, 0.9]))
    assert summary["max_dice_up_to"]["3"]["mean"] == pytest.approx(np.mean([0.7, 0.9, 1.0]))
    assert summary["seconds"]["first_click"]["mean"] == pytest.approx(0.5)
    later = summary["seconds"]["later_clicks"]
    assert later["n"] == 5 and later["n_nan"] == 1 and later["mean"] == pytest.approx(0.1)


def test_summary_counts_honoured_clicks_and_falls_from_the_rows() -> None:
    rows = _rows()  # liver c1 0.7 -> 0.6 and c2 0.9 -> 0.8 fall by 0.1; kidney never falls
    honoured = {("c1", 1): True, ("c2", 1): False, ("c1", 3): True, ("c2", 3): None}
    for r in rows:
        r["click_honoured"] = honoured.get((r["case"], r["click"]), True)
    summary = reports.build_summary(rows, [1, 3], metrics=("dice",))
    first = summary["click_honoured"]["overall"]["1"]
    assert first == {"honoured": 2, "recorded": 3, "share": pytest.approx(2 / 3)}
    third = summary["click_honoured"]["overall"]["3"]  # None: not recorded (an older file)
    assert third == {"honoured": 2, "recorded": 2, "share": 1.0}
    assert summary["click_honoured"]["per_class"]["liver"]["1"]["share"] == 0.5
    assert summary["click_honoured"]["per_dataset"]["d2"]["1"]["share"] == 1.0
    falls = summary["dice_falls"]
    assert falls["threshold"] == reports.DICE_FALL_THRESHOLD
    assert falls["overall"] == {"clicks": 6, "falls": 2, "share": pytest.approx(1 / 3)}
    assert falls["per_class"]["liver"] == {"clicks": 4, "falls": 2, "share": 0.5}
    assert falls["per_class"]["kidney"]["falls"] == 0
    # a drop within the threshold is not a fall; a NaN Dice is not compared
    rows = [_row("d", "c", "x", 1, 1, 0.5), _row("d", "c", "x", 1, 2, 0.46)]
    rows.append(_row("d", "c", "x", 1, 3, math.nan))
    falls = reports.build_summary(rows, [1], metrics=("dice",))["dice_falls"]["overall"]
    assert (falls["clicks"], falls["falls"]) == (1, 0)


def test_summary_of_no_rows_has_null_means() -> None:
    summary = reports.build_summary([], [1])
    assert summary["n_targets"] == 0
    assert summary["overall"]["1"]["dice"] == {
        "mean": None,
        "std": None,
        "n": 0,
        "n_nan": 0,
        "n_inf": 0,
    }


def test_summary_json_is_strict_json_with_nulls(tmp_path: Path) -> None:
    summary = reports.build_summary(_rows(), [1, 3], metrics=("dice",))
    summary["extra"] = {"nan": math.nan, "inf": -math.inf, "np": np.float32(0.25)}
    path = reports.write_summary(tmp_path / "out" / "summary.json", summary)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "out" / "summary.json" and text.endswith("}\n")
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["extra"] == {"nan": None, "inf": None, "np": 0.25}
    assert loaded["overall"] == summary["overall"]
    assert text.startswith('{\n  "config": {},\n  "clicks": [\n    1,')  # indent 2


# ------------------------------------------------------------------------------ atomic writes


def test_a_failed_summary_write_leaves_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "summary.json" / "in_the_way").mkdir(parents=True)  # a folder where the file goes
    with pytest.raises(OSError):
        reports.write_summary(tmp_path / "summary.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    assert (tmp_path / "summary.json").is_dir()


# ------------------------------------------------------------------------------------- plot


def test_plot_is_a_png_of_the_figure(tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = reports.plot_dice_vs_clicks(_rows(), tmp_path / "dice_vs_clicks.png", title="rg")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[:2] == (540, 840)  # 7 x 4.5 in at 120 dpi
    assert image.std() > 0.01  # something is drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dice_vs_clicks.png"]
    empty = reports.plot_dice_vs_clicks([], tmp_path / "empty.png")  # axes only, still a PNG
    assert empty.read_bytes()[:8] == PNG_SIGNATURE


def test_a_failed_plot_keeps_the_previous_png_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    path = reports.plot_dice_vs_clicks(_rows(), tmp_path / "dice_vs_clicks.png")
    before = path.read_bytes()

    def dies_half_way(self: Figure, fname: str, *args: object, **kwargs: object) -> None:
        Path(fname).write_bytes(PNG_SIGNATURE + b"trunc")
        raise RuntimeError("disk gone")

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(RuntimeError, match="disk gone"):
        reports.plot_dice_vs_clicks(_rows()[:3], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dice_vs_clicks.png"]
