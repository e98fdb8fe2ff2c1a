"""Pure parts of the output builders: rendering, UIDs, codes, settings, input checks."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from pydicom.sr.coding import Code
from pydicom.uid import UID

from node.config import Colormap, ConfigError, OutputSettings, load_settings
from node.errors import OutputError
from node.outputs import codes
from node.outputs._common import closed_polygon
from node.outputs.render import COLORMAPS, Outline, apply_colormap, blend, render_overlay
from node.outputs.sr import birads_code, failure_text, not_for_clinical_use_text
from node.outputs.uids import UID_PREFIX, derive_uid


def test_uids_are_derived_valid_and_distinct() -> None:
    uid = derive_uid("1.2.3", 0, "sr", "1.0", "")
    assert uid == derive_uid("1.2.3", 0, "sr", "1.0", "")
    assert UID(uid).is_valid and len(uid) <= 64 and uid.startswith(UID_PREFIX)
    others = {
        derive_uid("1.2.4", 0, "sr", "1.0"),
        derive_uid("1.2.3", 1, "sr", "1.0"),
        derive_uid("1.2.3", 0, "sc", "1.0"),
        derive_uid("1.2.3", 0, "sr", "1.1"),
        derive_uid("1.2.3", 0, "sr", "1.0", "9.9"),
        derive_uid("1.2", 30, "sr", "1.0"),  # no ambiguity from plain concatenation
    }
    assert uid not in others and len(others) == 6
    with pytest.raises(OutputError, match="study_uid"):
        derive_uid("", 0, "sr", "1")
    with pytest.raises(OutputError, match="revision"):
        derive_uid("1.2", -1, "sr", "1")


def test_code_meanings_fit_lo() -> None:
    found = [v for v in vars(codes).values() if isinstance(v, Code)]
    for table in (codes.BIRADS, codes.CLASS_CODES, codes.STATUS, codes.CAD_FINDINGS_SUMMARY):
        found += list(table.values())
    assert found and all(len(c.meaning) <= 64 for c in found)


@pytest.mark.parametrize(
    ("category", "value"),
    [
        ("4", "397144001"),
        ("4A", "397144001"),
        ("BI-RADS 5", "397145000"),
        ("0", "397138000"),
        ("1", "397140005"),
    ],
)
def test_birads_codes(category: str, value: str) -> None:
    code = birads_code(category)
    assert code is not None and code.value == value


@pytest.mark.parametrize("category", ["", "6", "high", "4D", "12"])
def test_categories_outside_birads_are_not_coded(category: str) -> None:
    assert birads_code(category) is None


def test_statements() -> None:
    assert not_for_clinical_use_text(None).count("Not for clinical use") == 1
    stated = not_for_clinical_use_text("Research only. Not for clinical use.")
    assert (
        stated.startswith("Intended use: Research only.")
        and stated.count("Not for clinical use") == 1
    )
    assert "not a normal" in failure_text("  timed\nout ")
    assert "timed out" in failure_text("timed\nout")


def test_every_configurable_colormap_is_drawn_and_no_other() -> None:
    assert set(COLORMAPS) == set(get_args(Colormap))
    assert set(get_args(OutputSettings.model_fields["colormap"].annotation)) == set(COLORMAPS)


def test_colormaps_and_blending() -> None:
    for name, anchors in COLORMAPS.items():
        ends = apply_colormap(np.array([0.0, 1.0, 2.0]), name)
        assert tuple(ends[0]) == anchors[0] and tuple(ends[1]) == anchors[-1] == tuple(ends[2])
    gray = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    heat = np.ones_like(gray)
    plain = blend(gray, heat, "jet", 0.0)
    assert np.array_equal(plain[..., 0], np.rint(gray * 255).astype(np.uint8))
    full = blend(gray, heat, "hot", 1.0)
    assert (full == np.array(COLORMAPS["hot"][-1], dtype=np.uint8)).all()
    cold = blend(gray, np.zeros_like(gray), "jet", 1.0)
    assert np.array_equal(cold, plain)
    with pytest.raises(OutputError, match="colormap"):
        apply_colormap(gray, "rainbow")
    with pytest.raises(OutputError, match="opacity"):
        blend(gray, heat, "jet", 1.5)
    with pytest.raises(OutputError, match="shape"):
        blend(gray, heat[:2], "jet", 0.5)


def test_overlay_size_outline_and_legend() -> None:
    gray = np.zeros((100, 50), dtype=np.float32)
    square = Outline(np.array([[10, 10], [30, 10], [30, 30], [10, 30]], dtype=float), "1: 0.90")
    rgb = render_overlay(
        gray,
        np.zeros_like(gray),
        [square],
        colormap="jet",
        opacity=0.5,
        longest_side=200,
        legend=["model 1"],
        warning="AI result",
    )
    assert rgb.dtype == np.uint8 and rgb.shape[1] == 100 and rgb.shape[0] > 200
    # the outline is drawn at twice the size: the edge near x=60, y=40 is white
    assert rgb[20:120, 59:62].max() == 255
    assert rgb[:200, 80:].max() == 0  # away from the outline the image is untouched
    assert rgb[200:].max() > 0  # legend text and colour bar


def test_closed_polygon() -> None:
    closed = closed_polygon([(0, 0), (4, 0), (4, 4)], "r")
    assert closed.dtype == np.float32 and np.array_equal(closed[0], closed[-1]) and len(closed) == 4
    assert len(closed_polygon(closed, "r")) == 4
    with pytest.raises(OutputError, match=r"r: polygon needs at least three"):
        closed_polygon([(0, 0), (1, 1), (0, 0)], "r")
    with pytest.raises(OutputError, match="shape"):
        closed_polygon([0, 1, 2], "r")
    with pytest.raises(OutputError, match="non-finite"):
        closed_polygon([(0, 0), (1, np.nan), (2, 2)], "r")


def test_output_settings(tmp_path: Path) -> None:
    assert OutputSettings().objects == ("sr", "mgcad", "sc")
    path = tmp_path / "node.yaml"
    path.write_text("outputs: {objects: [sr, sr]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"outputs\.objects"):
        load_settings(path, environ={})
    path.write_text("outputs: {colormap: rainbow}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"outputs\.colormap"):
        load_settings(path, environ={})
    settings = load_settings(None, environ={"BREAST_NODE__OUTPUTS__SC_SIZE": "0"})
    assert settings.outputs.sc_size == 0
