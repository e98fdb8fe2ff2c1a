"""Pretrained starts from local files, their normalisation in the card and in the node, and
per-architecture settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from node.config import InferenceSettings
from node.imaging.dataset import read_dataset
from node.imaging.preprocess import preprocess_dataset
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.models.folder import load_model_folder
from node.models.registry import create_model
from training.architectures import DEFAULTS, resolve
from training.config import ConfigError, TrainConfig, config_from_data
from training.datasets import load_dataset
from training.export import ExportOptions, export_model
from training.pretrained import load_pretrained
from training.train import build_model, train

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCH = "mobilenetv3_small_050"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An ImageNet-shaped (3 channels, 1000 classes) checkpoint with random weights."""
    torch.manual_seed(11)
    state = create_model(ARCH, num_classes=1000, in_chans=3).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / f"{ARCH}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path, state


def test_training_starts_from_the_checkpoint_and_the_node_normalises_as_the_card_says(
    tmp_path: Path,
    tiny_config: Callable[..., TrainConfig],
    tiny_data: tuple[Path, Path],
    checkpoint: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, state = checkpoint
    config = tiny_config(
        tmp_path / "run",
        model={"architecture": ARCH, "pretrained": str(path)},
        optim={"epochs": 1, "lr": 1e-5, "warmup_epochs": 0.0},
    )
    train(config, progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert info["pretrained"]["adapted"] == ["conv_stem.weight"]
    assert info["pretrained"]["reset"] == ["classifier.weight", "classifier.bias"]
    # the one-channel stem is the sum of the checkpoint's RGB filters, moved by at most
    # a few AdamW steps of 1e-5; a random start would be off by about 0.1
    stem = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["conv_stem.weight"]
    expected = state["conv_stem.weight"].sum(dim=1, keepdim=True)
    assert stem.shape == (16, 1, 3, 3)
    assert (stem - expected).abs().max() < 1e-3
    random_stem = create_model(ARCH, num_classes=3, in_chans=1).state_dict()["conv_stem.weight"]
    assert (random_stem - expected).abs().max() > 0.05
    # ImageNet normalisation, averaged over RGB for the one channel, recorded for the card
    mean, std = np.mean(IMAGENET_MEAN), np.mean(IMAGENET_STD)
    assert info["input"]["mean"] == pytest.approx([mean], abs=1e-4)
    assert info["input"]["std"] == pytest.approx([std], abs=1e-4)

    folder = tmp_path / "model"
    export_model(ExportOptions(runs=(tmp_path / "run",), out=folder, name="pre", tta="none"))
    card = load_model_folder(folder).card
    assert card.input.mean == pytest.approx((mean,), abs=1e-4)
    # the node feeds the member (x - mean) / std of its own preprocessing
    sample = load_dataset("synthetic", tiny_data[1])[0]
    engine = InferenceEngine.load(folder, InferenceSettings(tta="none", cam=False))
    (result,) = engine.infer_studies([StudyInput(sample.study_id, (ImageInput(sample.path, "1"),))])
    member = load_model_folder(folder).members[0]
    image = preprocess_dataset(read_dataset(sample.path), card.input.preprocess_options()).image
    x = (torch.from_numpy(image)[None, None] - card.input.mean[0]) / card.input.std[0]
    with torch.inference_mode():
        logits = member.model(x)[0].double() / member.spec.temperature
    expected_p = torch.softmax(logits, 0)[card.malignant_index].item()
    assert result.images[0].probability == pytest.approx(expected_p, abs=1e-5)


def test_pth_files_wrappers_prefixes_and_three_channels(
    tmp_path: Path, checkpoint: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    _, state = checkpoint
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = create_model(ARCH, num_classes=2, in_chans=3)
    loaded = load_pretrained(model, path)
    assert loaded.adapted == () and loaded.reset == ("classifier.weight", "classifier.bias")
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_a_checkpoint_of_another_architecture_is_refused(
    tmp_path: Path, checkpoint: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    path, _ = checkpoint
    with pytest.raises(ValueError, match=r"does not fit lcnet_050: missing: .*not in the model"):
        load_pretrained(create_model("lcnet_050", num_classes=3, in_chans=1), path)
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(create_model(ARCH, num_classes=3, in_chans=1), tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_pretrained(create_model(ARCH, num_classes=3, in_chans=1), tmp_path / "junk.pth")


def test_per_architecture_keys_and_defaults(tmp_path: Path) -> None:
    data = {
        "data": {"root": "x"},
        "optim": {"lr": 0.002},
        "per_architecture": {"lcnet_050": {"optim.lr": 0.0005, "model.head_init_scale": 0.0}},
    }
    small = config_from_data({**data, "model": {"architecture": "lcnet_050"}})
    assert small.optim.lr == 0.0005 and small.model.head_init_scale == 0.0
    plain = config_from_data({**data, "model": {"architecture": "breast_cnn_small"}})
    assert plain.optim.lr == 0.002 and plain.model.head_init_scale is None
    # --set wins over per_architecture
    chosen = config_from_data({**data, "model": {"architecture": "lcnet_050"}}, ["optim.lr=0.1"])
    assert chosen.optim.lr == 0.1
    with pytest.raises(ConfigError, match=r"\(with per_architecture.lcnet_050\) optim.lr"):
        config_from_data(
            {
                **data,
                "model": {"architecture": "lcnet_050"},
                "per_architecture": {"lcnet_050": {"optim.lr": -1}},
            }
        )
    # unset keys: the architecture's defaults (ConvNeXt: small rate, decay, stochastic depth)
    convnext = resolve(
        config_from_data({"data": {"root": "x"}, "model": {"architecture": "convnext_small"}})
    )
    assert (convnext.lr, convnext.weight_decay, convnext.drop_path_rate) == (
        DEFAULTS["convnext_small"].lr,
        0.05,
        0.2,
    )
    assert convnext.mean == (0.5,)  # from scratch: no ImageNet normalisation


def test_zero_head_starts_with_uniform_predictions(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(Path("unused"), model={"architecture": "lcnet_050", "head_init_scale": 0})
    model, _ = build_model(config)
    with torch.inference_mode():
        logits = model.eval()(torch.rand(2, 1, 64, 32))
    assert torch.count_nonzero(logits) == 0
