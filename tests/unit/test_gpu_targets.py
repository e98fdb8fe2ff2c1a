"""bench/gpu/targets.py turns the GPU check's JSON into ratios, and never reports a number
it did not measure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "gpu"))

import targets


def _inference(device: str, images_per_s: float, input_: list[int]) -> dict[str, object]:
    rows = [
        {"name": "ensemble", "precision": p, "batch": b, "images_per_s": images_per_s * b / 16}
        for p in ("fp32", "bf16")
        for b in (1, 4, 16)
    ]
    return {"device": device, "input": input_, "rows": rows}


def _e2e(device: str, seconds: list[float]) -> dict[str, object]:
    timelines = [
        {"syntax": "explicit (cold)", "state": "done", "timings": {"inference_s": 9.0}},
        *(
            {"syntax": "explicit", "state": "done", "timings": {"inference_s": s, "cam_s": 0.1}}
            for s in seconds
        ),
    ]
    return {"latency": [{"model": "full", "device": device, "timelines": timelines}]}


def test_ratios_from_a_gpu_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inference = tmp_path / "inference.json"
    e2e = tmp_path / "e2e.json"
    inference.write_text(json.dumps(_inference("NVIDIA H200", 800.0, [1024, 512])))
    e2e.write_text(json.dumps(_e2e("cuda:0", [0.3, 0.5])))
    assert targets.main([str(inference), str(e2e)]) == 0
    out = capsys.readouterr().out
    assert "800 images/s (batch 16) | 2.00x |" in out
    # cold start left out; (0.4 + 0.6) / 2 = 0.5 s per study
    assert "0.500 s per study (2 warm studies) | 2.00x |" in out


def test_nothing_measured_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inference = tmp_path / "inference.json"
    e2e = tmp_path / "e2e.json"
    # a CPU run, and an inference run at another input size: not the targets' conditions
    inference.write_text(json.dumps(_inference("CPU", 2.0, [256, 128])))
    e2e.write_text(json.dumps(_e2e("cpu", [20.0])))
    assert (
        targets.main(
            [
                str(inference),
                str(e2e),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("| unmeasured | - |") == 2
    assert targets.main([str(tmp_path / "absent.json")]) == 0
    assert capsys.readouterr().out.count("unmeasured") == 2
