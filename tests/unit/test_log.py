"""Logging: JSON lines off a terminal, level from settings, no patient identity."""

from __future__ import annotations

import io
import json
import logging

import structlog

from node.config import LoggingSettings
from node.log import configure_logging


def test_json_lines_and_level() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="INFO", format="auto"), stream=stream)
    log = structlog.get_logger("test")
    log.debug("hidden")
    log.info("study.received", study_uid="1.2.3", instances=4)
    logging.getLogger("somelib").warning("from %s", "stdlib")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["event"] for entry in lines] == ["study.received", "from stdlib"]
    assert lines[0]["study_uid"] == "1.2.3"
    assert lines[0]["level"] == "info"
    assert lines[0]["timestamp"].endswith("Z")


def test_patient_identity_is_dropped() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="DEBUG", format="json"), stream=stream)
    log = structlog.get_logger("test")
    log.info(
        "study.received",
        patient_name="DOE^JANE",
        PatientID="PID-12345",
        patient_birth_date="19700101",
        study_uid="1.2.3",
    )
    text = stream.getvalue()
    assert "DOE^JANE" not in text
    assert "PID-12345" not in text
    assert "19700101" not in text
    assert json.loads(text)["study_uid"] == "1.2.3"


def test_console_format() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="INFO", format="console"), stream=stream)
    structlog.get_logger("test").info("node.started", port=11112)
    text = stream.getvalue()
    assert "node.started" in text
    assert "port=11112" in text
    assert not text.lstrip().startswith("{")
