"""The breast-node command line: exit codes, help, and serve's start/stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.cli import main
from node.models.card import read_card
from tests.conftest import free_port
from tests.helpers.models import write_random_model_folder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "node.example.yaml"
BREAST_NODE = Path(sys.executable).parent / "breast-node"


def test_check_config_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {EXAMPLE}")
    assert "BREAST_AI on 0.0.0.0:11112" in out


def test_check_config_says_which_model_infers_each_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    for name, modality in (("demo", "MG"), ("demo-us", "US")):
        folder = ROOT / "models" / name
        version = read_card(folder).version
        assert f"model:    {folder}: {name} {version} ({modality})" in out
    assert "rule mammography: MG -> demo" in out
    assert "rule breast-ultrasound: US -> demo-us" in out


def test_check_config_refuses_a_rule_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mg_only = write_random_model_folder(tmp_path / "mg", modalities=("MG",), name="mg-only")
    config = tmp_path / "node.yaml"
    config.write_text(f"models: [{mg_only}]\n", encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, "the error is one line"
    assert "eligibility rule 'breast-ultrasound' can match US images" in err
    assert "no model accepts modality US (mg-only: MG)" in err
    config.write_text(
        f"models: [{mg_only}]\neligibility: {{without_model: skip}}\n", encoding="utf-8"
    )
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "rule breast-ultrasound: US -> skipped" in out
    assert "warning: eligibility rule 'breast-ultrasound' can match US images" in out


def test_check_config_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  port: 99999\n", encoding="utf-8")
    assert main(["check-config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, "the error is one line"
    assert err.startswith(f"error: {bad}: node.port: ")


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read config file" in capsys.readouterr().err


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed entry point behaves like main(): 0 valid, 1 invalid, 2 usage."""
    ok = subprocess.run(
        [str(BREAST_NODE), "check-config", "--config", str(EXAMPLE)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: {ae_title: 'WAY_TOO_LONG_AE_TITLE'}\n", encoding="utf-8")
    failed = subprocess.run(
        [str(BREAST_NODE), "check-config", "--config", str(bad)], capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert "node.ae_title" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    usage = subprocess.run([str(BREAST_NODE), "no-such-command"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run([str(BREAST_NODE), "--help"], capture_output=True, text=True, check=True)
    from node.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    names = list(subparsers.choices)  # type: ignore[union-attr]
    assert {"check-config", "serve"} <= set(names)
    for action in subparsers._choices_actions:  # type: ignore[union-attr]
        assert action.help, f"{action.dest} has no description"
        assert action.dest in out.stdout
        assert action.help in out.stdout


def test_config_from_environment_variable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: {port: 0}\n", encoding="utf-8")
    env = {**os.environ, "BREAST_NODE_CONFIG": str(bad)}
    done = subprocess.run(
        [str(BREAST_NODE), "check-config"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1
    assert str(bad) in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_logs_json_and_stops_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    config = tmp_path / "node.yaml"
    port = free_port()
    config.write_text(
        f"node: {{port: {port}}}\n"
        f"http: {{port: {free_port()}}}\n"
        "storage: {database: 'sqlite:///var/node.db', spool: var/spool}\n"
        "model: no-such-model\n"
        "destinations: [{name: out, folder: var/out}]\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [str(BREAST_NODE), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lines: list[dict[str, object]] = []
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(json.loads(line))  # not a terminal: every line is JSON
            if lines[-1]["event"] == "node.started":
                break
        events = [entry["event"] for entry in lines]
        assert "node.started" in events, lines
        unavailable = next(e for e in lines if e["event"] == "model.unavailable")
        assert unavailable["level"] == "warning"
        assert "not inferred" in str(unavailable["consequence"])
        starting = next(e for e in lines if e["event"] == "node.starting")
        assert starting["settings"]["node"]["port"] == port  # type: ignore[index]
        assert (tmp_path / "var" / "spool").is_dir()
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    tail = [json.loads(line)["event"] for line in rest.splitlines() if line.strip()]
    assert tail[-1] == "node.stopped"
