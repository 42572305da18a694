"""ResNet-18 factory, head swap, backbone loading and the strategy registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from wbc import strategies
from wbc.strategies import Strategy, get_strategy, register_strategy, strategy_names
from wbc.training.resnet import (
    WeightsError,
    _strip_wrapper_prefixes,
    backbone_state,
    build_resnet18,
    load_backbone,
    read_state_dict,
    replace_head,
    to_channels_last,
)


def _assert_backbone_equal(model: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    backbone = {k for k in state if not k.startswith("fc.")}
    assert backbone == {k for k in reference if not k.startswith("fc.")}
    for key in backbone:
        assert torch.equal(state[key], reference[key]), key


@pytest.fixture(scope="module")
def cam16_state() -> dict[str, torch.Tensor]:
    """A 2-class ResNet-18 state dict standing in for the CAM16 classifier, with trained BN stats."""
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=2)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # moves BN running stats away from their defaults
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_build_from_scratch_has_requested_head() -> None:
    model = build_resnet18(5)
    assert isinstance(model.fc, nn.Linear)
    assert model.fc.weight.shape == (5, 512)


def test_replace_head_keeps_every_backbone_weight() -> None:
    model = build_resnet18(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = replace_head(model, 5)
    assert out is model
    assert model.fc.weight.shape == (5, 512) and model.fc.bias.shape == (5,)
    _assert_backbone_equal(model, before)


def test_replace_head_with_generator_is_reproducible_and_leaves_global_rng() -> None:
    model = build_resnet18(2)
    heads = []
    for _ in range(2):
        torch.manual_seed(123)
        replace_head(model, 5, generator=torch.Generator().manual_seed(7))
        heads.append({k: v.clone() for k, v in model.fc.state_dict().items()})
        # The global stream is where manual_seed(123) left it: the head drew from the generator.
        assert torch.equal(torch.rand(3), _fresh(123))
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    bound = 1 / 512**0.5
    assert heads[0]["weight"].abs().max() <= bound and heads[0]["bias"].abs().max() <= bound


def _fresh(seed: int) -> torch.Tensor:
    return torch.rand(3, generator=torch.Generator().manual_seed(seed))


def test_load_backbone_from_two_class_model(cam16_state: dict[str, torch.Tensor]) -> None:
    model = build_resnet18(5)
    head_before = {k: v.clone() for k, v in model.fc.state_dict().items()}
    load_backbone(model, cam16_state, source="cam16.pt")
    _assert_backbone_equal(model, cam16_state)
    for key, value in model.fc.state_dict().items():
        assert torch.equal(value, head_before[key])


def test_load_backbone_strips_ddp_prefix(cam16_state: dict[str, torch.Tensor]) -> None:
    model = build_resnet18(5)
    load_backbone(model, {f"module.{k}": v for k, v in cam16_state.items()}, source="ddp")
    _assert_backbone_equal(model, cam16_state)


def test_a_prefix_is_stripped_only_from_every_key() -> None:
    one = torch.zeros(1)
    stacked = {"module._orig_mod.conv1.weight": one, "module._orig_mod.fc.bias": one}
    assert _strip_wrapper_prefixes(stacked).keys() == {"conv1.weight", "fc.bias"}
    # A prefix on some keys is part of the model's own names (unlike torch's
    # consume_prefix_in_state_dict_if_present, which would rename just those).
    partial = {"module.weight": one, "fc.bias": one}
    assert _strip_wrapper_prefixes(partial) == partial
    assert list(partial) == ["module.weight", "fc.bias"]  # the caller's dict is untouched
    assert _strip_wrapper_prefixes({}) == {}


def test_backbone_state_is_a_snapshot_without_head(cam16_state: dict[str, torch.Tensor]) -> None:
    model = build_resnet18(5)
    load_backbone(model, cam16_state, source="cam16.pt")
    snapshot = backbone_state(model)
    assert snapshot.keys() == {k for k in cam16_state if not k.startswith("fc.")}
    with torch.no_grad():
        model.conv1.weight.zero_()  # a snapshot, not a view of the live weights
    assert all(torch.equal(v, cam16_state[k]) for k, v in snapshot.items())


def test_compiled_checkpoints_load(cam16_state: dict[str, torch.Tensor]) -> None:
    """A state dict saved from a ``torch.compile`` wrapper elsewhere (keys ``_orig_mod.``)."""
    model = build_resnet18(5)
    load_backbone(model, {f"_orig_mod.{k}": v for k, v in cam16_state.items()},
                  source="compiled")  # prefix stripped
    _assert_backbone_equal(model, cam16_state)
    with pytest.raises(TypeError, match=r"nn\.Linear 'fc' head"):
        replace_head(nn.Sequential(nn.Linear(2, 2)), 5)


def test_load_backbone_errors_name_source_and_keys(cam16_state: dict[str, torch.Tensor]) -> None:
    model = build_resnet18(5)
    missing = {k: v for k, v in cam16_state.items() if k != "layer4.1.bn2.weight"}
    with pytest.raises(WeightsError, match=r"cam16\.pt.*missing keys: layer4\.1\.bn2\.weight"):
        load_backbone(model, missing, source="cam16.pt")
    extra = {**cam16_state, "decoder.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"unexpected keys: decoder\.weight"):
        load_backbone(model, extra, source="cam16.pt")
    shaped = {**cam16_state, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(WeightsError, match=r"conv1\.weight \(64, 3, 3, 3\) != \(64, 3, 7, 7\)"):
        load_backbone(model, shaped, source="cam16.pt")


def test_build_from_local_imagenet_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    imagenet = resnet18(weights=None, num_classes=1000).state_dict()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(imagenet, path)
    model = build_resnet18(5, weights_path=path)
    _assert_backbone_equal(model, imagenet)
    assert model.fc.weight.shape == (5, 512)


def test_read_state_dict_unwraps_checkpoint(tmp_path: Path,
                                            cam16_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": cam16_state, "epoch": 3}, path)
    assert read_state_dict(path).keys() == cam16_state.keys()


def test_missing_weights_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth not found; download torchvision"):
        build_resnet18(5, weights_path=path)


def test_garbage_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=r"garbage\.pth: cannot be read as a PyTorch state dict"):
        build_resnet18(5, weights_path=path)


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # a pickled module, which weights_only refuses to load
    with pytest.raises(WeightsError, match=r"whole_model\.pth: .*Unsupported global"):
        build_resnet18(5, weights_path=path)


def test_other_model_weights_are_named(tmp_path: Path) -> None:
    path = tmp_path / "small_cnn.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).state_dict(), path)
    with pytest.raises(WeightsError, match=r"small_cnn\.pth.*missing keys: .*unexpected keys: 0\."):
        build_resnet18(5, weights_path=path)


def test_forward_channels_last() -> None:
    model = to_channels_last(build_resnet18(5)).eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 5)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_builtin_strategies() -> None:
    assert strategy_names()[:3] == ("scratch", "pretrain", "pretrain_aug")
    assert get_strategy("scratch").pretrain is None
    assert get_strategy("pretrain") == Strategy(
        "pretrain", get_strategy("pretrain").description, "cam16", False
    )
    assert get_strategy("pretrain_aug").pretrain == "cam16"
    assert get_strategy("pretrain_aug").mask_augment


def test_unknown_strategy_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'pretrian'.*scratch, pretrain, pretrain_aug"):
        get_strategy("pretrian")


def test_register_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))
    prcc = Strategy("prcc_ssl", "pRCC self-supervised pretraining", "prcc", False)
    assert register_strategy(prcc) is prcc
    assert get_strategy("prcc_ssl") is prcc
    assert strategy_names()[-1] == "prcc_ssl"
    with pytest.raises(ValueError, match="'scratch' is already registered"):
        register_strategy(Strategy("scratch", "again", None, False))


def test_strategy_names_are_validated() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        Strategy("Pretrain Aug", "bad", None, False)
