"""Settings: loading, validation messages, path resolution, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import (
    DicomDestination,
    FolderDestination,
    Settings,
    check_ae_title,
    load_settings,
)
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "node.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_file_is_valid_and_resolves_against_its_folder() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.node.ae_title == "BREAST_AI"
    assert settings.node.port == 11112
    assert settings.storage.spool == ROOT / "var" / "spool"
    assert settings.storage.database == f"sqlite:///{ROOT / 'var' / 'node.db'}"
    assert settings.models == (ROOT / "models" / "demo", ROOT / "models" / "demo-us")
    assert settings.inference.tta == "card"
    assert settings.eligibility.without_model == "refuse"
    assert settings.destinations == (
        FolderDestination(name="results-folder", folder=ROOT / "var" / "results"),
    )


def test_example_matches_builtin_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example documents the defaults: loading it from the repo root equals no file at all."""
    monkeypatch.chdir(ROOT)
    assert load_settings(EXAMPLE, environ={}) == load_settings(None, environ={})


def test_every_setting_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for section_name, section in Settings.model_fields.items():
        assert f"{section_name}:" in text, section_name
        annotation = section.annotation
        fields = getattr(annotation, "model_fields", {})
        for key in fields:
            assert f"  {key}:" in text, f"{section_name}.{key} is not in the example"


def test_valid_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node: {ae_title: MAMMO_AI, host: 127.0.0.1, port: 4104}
storage: {database: "sqlite:///db/queue.db", spool: spool}
completion: {quiet_seconds: 5}
destinations:
  - {name: pacs, ae_title: ORTHANC, host: pacs.local, port: 4242}
  - {name: drop, folder: /srv/results}
model: null
logging: {level: debug, format: json}
""",
    )
    settings = load_settings(path, environ={})
    assert settings.node.ae_title == "MAMMO_AI"
    assert settings.node.port == 4104
    assert settings.storage.spool == tmp_path / "spool"
    assert settings.storage.database == f"sqlite:///{tmp_path / 'db' / 'queue.db'}"
    assert settings.completion.quiet_seconds == 5.0
    assert settings.destinations[0] == DicomDestination(
        name="pacs", ae_title="ORTHANC", host="pacs.local", port=4242
    )
    assert settings.destinations[1] == FolderDestination(name="drop", folder=Path("/srv/results"))
    assert settings.model is None and settings.models == ()
    assert not settings.model_available
    assert settings.logging.level == "DEBUG"


def test_built_in_defaults_serve_mammography_and_ultrasound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={})
    assert settings.models == (tmp_path / "models" / "demo", tmp_path / "models" / "demo-us")
    assert [r.name for r in settings.eligibility.rules] == ["mammography", "breast-ultrasound"]


def test_model_is_one_folder_of_models(tmp_path: Path) -> None:
    one = load_settings(write(tmp_path, "model: models/mg\n"), environ={})
    assert one.model == tmp_path / "models" / "mg"
    assert one.models == (tmp_path / "models" / "mg",)
    two = load_settings(write(tmp_path, "models: [a, b]\n"), environ={})
    assert two.models == (tmp_path / "a", tmp_path / "b") and two.model is None
    (tmp_path / "b").mkdir()
    assert two.available_models == (tmp_path / "b",) and two.model_available
    with pytest.raises(ConfigError, match=r"give model .* or models .*, not both"):
        load_settings(write(tmp_path, "model: a\nmodels: [b]\n"), environ={})
    with pytest.raises(ConfigError, match="a model folder is listed twice"):
        load_settings(write(tmp_path, "models: [a, ./a]\n"), environ={})
    rule = "eligibility: {rules: [{name: us, modalities: [US], model: demo-us}]}\n"
    assert load_settings(write(tmp_path, rule), environ={}).eligibility.rules[0].model == "demo-us"
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "eligibility: {without_model: ignore}\n"), environ={})
    assert caught.value.key == "eligibility.without_model"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "node: {port: 4104}\n"), environ={})
    with pytest.raises(ValueError):
        settings.node.port = 1  # type: ignore[misc]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.node.port == 11112


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("node: {colour: blue}\n", "node.colour"),
        ("nodes: {port: 1}\n", "nodes"),
        ("destinations: [{name: a, folder: x, ae_title: B}]\n", "destinations.0.ae_title"),
    ],
)
def test_unknown_key_is_rejected_by_name(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == key
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert "unknown setting" in message


@pytest.mark.parametrize("port", [0, 65536, -1, "eleven", 11112.5, True])
def test_bad_port_is_rejected(tmp_path: Path, port: object) -> None:
    value = "true" if port is True else repr(port)
    path = write(tmp_path, f"node: {{port: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == "node.port"
    assert "node.port" in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_destination_port_names_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "destinations: [{name: pacs, ae_title: P, host: h, port: 99999}]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == "destinations.0.port"


@pytest.mark.parametrize(
    "title",
    [
        "A" * 17,  # too long
        "",  # empty
        "    ",  # only spaces
        "BAD\\AE",  # backslash
        "BAD\tAE",  # control character
        "BAD\nAE",
        "MAMMO\u00c9",  # outside the default repertoire
    ],
)
def test_bad_ae_title_is_rejected(tmp_path: Path, title: str) -> None:
    path = tmp_path / "node.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"node": {"ae_title": title}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == "node.ae_title"


@pytest.mark.parametrize(
    ("title", "normalised"),
    [("A" * 16, "A" * 16), ("  PACS ", "PACS"), ("ANY-AE_1.2 X", "ANY-AE_1.2 X")],
)
def test_good_ae_titles(title: str, normalised: str) -> None:
    assert check_ae_title(title) == normalised


def test_duplicate_destination_names(tmp_path: Path) -> None:
    path = write(tmp_path, "destinations: [{name: a, folder: x}, {name: a, folder: y}]\n")
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(path, environ={})


def test_invalid_yaml_and_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML at line 3"):
        load_settings(write(tmp_path, "node:\n  port: [1\n"), environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_bad_database_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "storage: {database: 'not a url'}\n"), environ={})
    assert info.value.key == "storage.database"


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {port: 4104}\n")
    env = {
        "BREAST_NODE__NODE__PORT": "4105",
        "breast_node__node__ae_title": "FROM_ENV",
        "BREAST_NODE__COMPLETION__QUIET_SECONDS": "2.5",
        "BREAST_NODE__MODEL": "null",
        "UNRELATED": "x",
    }
    settings = load_settings(path, environ=env)
    assert settings.node.port == 4105
    assert settings.node.ae_title == "FROM_ENV"
    assert settings.completion.quiet_seconds == 2.5
    assert settings.model is None and settings.models == ()


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {port: 4104}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"BREAST_NODE__NODE__PORT": "70000"})
    assert info.value.source == "BREAST_NODE__NODE__PORT"
    assert info.value.key == "node.port"


def test_redacted_masks_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, "storage: {database: 'postgresql://node:s3cret@db/queue'}\n")
    settings = load_settings(path, environ={})
    shown = settings.redacted()["storage"]["database"]
    assert "s3cret" not in shown
    assert shown.startswith("postgresql://node:***@db")
    assert "s3cret" in settings.storage.database
