"""Model cards and folders: a valid folder loads; every kind of mismatch fails at load time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from node.errors import ModelError
from node.models.card import CARD_FILE, read_card
from node.models.folder import load_model_folder, write_model_folder
from node.models.registry import ARCHITECTURES, GLOBAL_POOLS, create_model
from tests.helpers.models import card_data, write_random_model_folder


def edit_card(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / CARD_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_written_folder_loads_and_predicts(tmp_path: Path) -> None:
    folder = write_random_model_folder(
        tmp_path / "m", ("breast_cnn_small", "breast_cnn_small"), weights=(2, 1)
    )
    loaded = load_model_folder(folder)
    card = loaded.card
    assert card.name == "tiny-test" and card.malignant_index == 2
    assert [m.spec.name for m in loaded.members] == ["m0", "m1"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "card.yaml",
        "m0.safetensors",
        "m1.safetensors",
    ]
    assert card.operating_point().name == "sens90"
    assert card.operating_point("sens95").threshold == pytest.approx(0.15)
    with torch.inference_mode():
        logits = loaded.members[0].model(torch.zeros(2, 1, 128, 64))
    assert logits.shape == (2, 3)
    # the card on disk round-trips through the validator unchanged
    assert read_card(folder) == card


def test_members_keep_their_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = create_model("breast_cnn_small", num_classes=3, in_chans=1)
    folder = write_random_model_folder(tmp_path / "m", states={"m0": model.state_dict()})
    loaded = load_model_folder(folder).members[0].model
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_is_built_by_timm_with_the_cam_interface(architecture: str) -> None:
    model = create_model(architecture, num_classes=2, in_chans=3)
    with torch.inference_mode():
        features = model.forward_features(torch.zeros(1, 3, 64, 64))
        logits = model.forward_head(features)
    assert features.ndim == 4 and logits.shape == (1, 2)


def test_unknown_architecture_in_the_registry() -> None:
    with pytest.raises(ModelError, match="unknown architecture 'resnet_9000'"):
        create_model("resnet_9000", num_classes=2, in_chans=1)


def test_breast_cnn_small_refuses_pretrained() -> None:
    import timm

    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("breast_cnn_small", pretrained=True)


def test_max_pooling_answers_one_small_spot_more_than_average_pooling() -> None:
    """One bright spot in a large map: average pooling dilutes it, max pooling keeps it."""
    spot = torch.zeros(1, 1, 256, 128)
    spot[..., 100:108, 60:68] = 1.0
    responses = {}
    for pool in ("avg", "max"):
        torch.manual_seed(0)
        model = create_model("breast_cnn_small", num_classes=0, in_chans=1, global_pool=pool)
        with torch.inference_mode():
            features = model(torch.cat([torch.zeros_like(spot), spot]))
        responses[pool] = float((features[1] - features[0]).abs().sum())
    assert responses["max"] > 5 * responses["avg"]


@pytest.mark.parametrize("pool", GLOBAL_POOLS)
@pytest.mark.parametrize("architecture", ["breast_cnn_small", "lcnet_050"])
def test_global_pool_reaches_the_pooling_layer(architecture: str, pool: str) -> None:
    model = create_model(architecture, num_classes=3, in_chans=1, global_pool=pool)
    layer = model.global_pool
    assert (layer if isinstance(layer, str) else getattr(layer, "pool_type", None)) == pool
    with torch.inference_mode():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 3)


def test_unknown_global_pool_in_the_registry() -> None:
    with pytest.raises(ModelError, match="unknown global_pool 'median'"):
        create_model("breast_cnn_small", num_classes=2, in_chans=1, global_pool="median")


def test_member_global_pool_builds_that_pooling(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = create_model("breast_cnn_small", num_classes=3, in_chans=1, global_pool="catavgmax")
    folder = write_random_model_folder(tmp_path / "m", states={"m0": model.state_dict()})
    with pytest.raises(ModelError, match="does not fit"):  # the card does not say catavgmax yet
        load_model_folder(folder)
    edit_card(folder, lambda d: _members(d)[0].update(global_pool="catavgmax"))
    loaded = load_model_folder(folder).members[0]
    assert loaded.spec.global_pool == "catavgmax"
    assert loaded.model.global_pool == "catavgmax"
    # cards without the field keep the architecture's default
    default = load_model_folder(write_random_model_folder(tmp_path / "d")).members[0]
    assert default.spec.global_pool is None and default.model.global_pool == "avg"


# ------------------------------------------------------------------ weights mismatches
def test_sha256_mismatch(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    edit_card(folder, lambda d: d["ensemble"]["members"][0].update(sha256="0" * 64))
    with pytest.raises(
        ModelError,
        match=r"member 'm0': weights file m0\.safetensors has SHA-256 [0-9a-f]{64}, "
        r"the card says 0{64}",
    ):
        load_model_folder(folder)


def test_changed_weights_file(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    with (folder / "m0.safetensors").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="SHA-256"):
        load_model_folder(folder)


def test_missing_weights_file(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    (folder / "m0.safetensors").unlink()
    with pytest.raises(ModelError, match=r"weights file m0\.safetensors is missing"):
        load_model_folder(folder)


def test_missing_keys(tmp_path: Path) -> None:
    state = create_model("breast_cnn_small", num_classes=3, in_chans=1).state_dict()
    del state["fc.bias"]
    folder = write_random_model_folder(tmp_path / "m", states={"m0": state})
    with pytest.raises(ModelError, match=r"does not fit breast_cnn_small .*missing keys: fc.bias"):
        load_model_folder(folder)


def test_unexpected_keys(tmp_path: Path) -> None:
    state = create_model("breast_cnn_small", num_classes=3, in_chans=1).state_dict()
    state["extra.weight"] = torch.zeros(2)
    folder = write_random_model_folder(tmp_path / "m", states={"m0": state})
    with pytest.raises(ModelError, match=r"unexpected keys: extra\.weight"):
        load_model_folder(folder)


def test_shape_mismatch_from_other_labels(tmp_path: Path) -> None:
    two_class = create_model("breast_cnn_small", num_classes=2, in_chans=1).state_dict()
    folder = write_random_model_folder(tmp_path / "m", states={"m0": two_class})
    with pytest.raises(
        ModelError, match=r"with 3 labels .*shape mismatch: fc.bias \(2,\) != \(3,\)"
    ):
        load_model_folder(folder)


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    other = create_model("efficientnet_b0", num_classes=3, in_chans=1).state_dict()
    folder = write_random_model_folder(tmp_path / "m", states={"m0": other})
    with pytest.raises(ModelError, match=r"missing keys: .* and .* more; unexpected keys"):
        load_model_folder(folder)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    (folder / "m0.safetensors").write_bytes(b"not safetensors")
    from node.models.folder import sha256_file

    edit_card(
        folder,
        lambda d: d["ensemble"]["members"][0].update(sha256=sha256_file(folder / "m0.safetensors")),
    )
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model_folder(folder)


# ------------------------------------------------------------------ card mistakes
def _members(data: dict[str, Any]) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = data["ensemble"]["members"]
    return members


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            lambda d: _members(d)[0].update(architecture="resnet_9000"),
            "ensemble.members.0.architecture",
            "unknown architecture 'resnet_9000'",
        ),
        (
            lambda d: d.update(malignant_label="cancer"),
            "(card)",
            "malignant_label 'cancer' is not one of the labels",
        ),
        (
            lambda d: d.update(labels=["normal", "normal", "malignant"]),
            "labels",
            "labels must be unique",
        ),
        (lambda d: d.update(labels=["malignant"]), "labels", "at least two labels"),
        (
            lambda d: d["input"].update(mean=[0.5, 0.5]),
            "input",
            "mean has 2 values but channels is 1",
        ),
        (lambda d: d["input"].update(std=[0.0]), "input", "std values must be greater than 0"),
        (lambda d: d["input"].update(channels=2), "input.channels", "Input should be 1 or 3"),
        (
            lambda d: _members(d)[0].update(sha256="ABC"),
            "ensemble.members.0.sha256",
            "64 lower-case hexadecimal",
        ),
        (
            lambda d: _members(d)[0].update(weights="../x.safetensors"),
            "ensemble.members.0.weights",
            "plain file name",
        ),
        (
            lambda d: _members(d)[0].update(temperature=0),
            "ensemble.members.0.temperature",
            "greater than 0",
        ),
        (lambda d: _members(d)[0].update(weight=-1), "ensemble.members.0.weight", "greater than 0"),
        (
            lambda d: _members(d)[0].update(global_pool="median"),
            "ensemble.members.0.global_pool",
            "unknown global_pool 'median'",
        ),
        (
            lambda d: _members(d).append(dict(_members(d)[0])),
            "ensemble",
            "member name 'm0' is used twice",
        ),
        (
            lambda d: d["operating_points"][0].update(threshold=1.5),
            "operating_points.0.threshold",
            "less than or equal to 1",
        ),
        (
            lambda d: d.update(default_operating_point="sens99"),
            "(card)",
            "default_operating_point 'sens99'",
        ),
        (
            lambda d: d["ensemble"].update(
                assessment={"categories": ["1", "2"], "cut_points": [0.5, 0.6]}
            ),
            "ensemble.assessment",
            "2 categories need 1 cut points",
        ),
        (
            lambda d: d["ensemble"].update(
                assessment={"categories": ["1", "2", "3"], "cut_points": [0.6, 0.5]}
            ),
            "ensemble.assessment",
            "increase strictly",
        ),
        (lambda d: d.update(colour="blue"), "colour", "unknown field"),
        (lambda d: d.pop("intended_use"), "intended_use", "Field required"),
        (lambda d: d.update(modalities=["CT"]), "modalities.0", "Input should be 'MG' or 'US'"),
    ],
)
def test_card_errors_name_the_file_and_the_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], field: str, message: str
) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    edit_card(folder, change)
    with pytest.raises(ModelError) as info:
        load_model_folder(folder)
    text = str(info.value)
    assert text.startswith(f"{folder / CARD_FILE}: {field}: "), text
    assert message in text


def test_card_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model folder does not exist"):
        load_model_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="cannot read the model card"):
        load_model_folder(tmp_path / "empty")
    folder = write_random_model_folder(tmp_path / "m")
    (folder / CARD_FILE).write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_model_folder(folder)
    (folder / CARD_FILE).write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ModelError, match="must be a mapping"):
        load_model_folder(folder)


def test_export_needs_weights_for_every_member(tmp_path: Path) -> None:
    data = card_data([{"name": "a", "architecture": "breast_cnn_small"}])
    with pytest.raises(ModelError, match="no weights given for member 'a'"):
        write_model_folder(tmp_path / "m", data, {})


def test_unknown_operating_point_by_name(tmp_path: Path) -> None:
    card = load_model_folder(write_random_model_folder(tmp_path / "m")).card
    with pytest.raises(
        ModelError, match="has no operating point 'sens99' \\(has: sens90, sens95\\)"
    ):
        card.operating_point("sens99")


# ------------------------------------------------------------------ any timm name, strides
def test_any_timm_architecture_loads_from_a_card(tmp_path: Path) -> None:
    """Not in the tested set, but a timm name: the card, the folder and the node take it."""
    folder = write_random_model_folder(tmp_path / "m", ("resnet10t",), height=64, width=64)
    loaded = load_model_folder(folder).members[0]
    assert loaded.spec.architecture == "resnet10t"
    with torch.inference_mode():
        assert loaded.model(torch.zeros(1, 1, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize("architecture", ["breast_cnn_small", "mobilenetv3_small_050", "resnet50"])
def test_output_stride_gives_a_finer_map_with_the_same_weights(architecture: str) -> None:
    """timm's own output_stride (ResNet) or the registry's stride reduction (the others)."""
    coarse = create_model(architecture, num_classes=3, in_chans=1)
    fine = create_model(architecture, num_classes=3, in_chans=1, output_stride=16)
    finer = create_model(architecture, num_classes=3, in_chans=1, output_stride=8)
    state = coarse.state_dict()
    assert {k: v.shape for k, v in fine.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    x = torch.rand(1, 1, 128, 64)
    with torch.inference_mode():
        shapes = [m.forward_features(x).shape[-2:] for m in (coarse, fine, finer)]
    assert [tuple(s) for s in shapes] == [(4, 2), (8, 4), (16, 8)]


def test_output_stride_in_the_card_builds_that_model(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    edit_card(folder, lambda d: _members(d)[0].update(output_stride=16))
    member = load_model_folder(folder).members[0]
    assert member.spec.output_stride == 16
    with torch.inference_mode():
        assert member.model.forward_features(torch.zeros(1, 1, 128, 64)).shape[-2:] == (8, 4)
    edit_card(folder, lambda d: _members(d)[0].update(output_stride=12))
    with pytest.raises(ModelError, match=r"output_stride: .*must be one of 8, 16, 32"):
        load_model_folder(folder)


def test_an_unknown_output_stride_is_refused() -> None:
    with pytest.raises(ModelError, match="output_stride 12 is not one of 8, 16, 32"):
        create_model("breast_cnn_small", num_classes=3, in_chans=1, output_stride=12)
