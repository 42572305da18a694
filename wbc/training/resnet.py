"""ResNet-18 factory, head replacement and loading a pretrained backbone (the report's 2.1-2.2).

The report's transfer learning is: train a ResNet-18 on CAM16 (A), load it (B), remove its
output layer (C), add a new 5-way layer (D) and train on WBC (E). Here B is
:func:`load_backbone` (or :func:`build_resnet18` with ``weights_path``), C-D is
:func:`replace_head`. Everything but the ``fc`` head is called the backbone; it is copied
bit-for-bit, never re-initialised.

Nothing here downloads: torchvision's ``weights=`` enums fetch from the internet, so ImageNet
weights are taken only from a local file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18

__all__ = [
    "HEAD",
    "WeightsError",
    "backbone_state",
    "build_resnet18",
    "load_backbone",
    "read_state_dict",
    "replace_head",
    "to_channels_last",
    "unwrap_model",
]

HEAD = "fc"
"""Attribute name of torchvision ResNet's output layer; every other weight is backbone."""

# Prefixes that wrappers put in front of every key: DistributedDataParallel (and Ray Train's
# prepare_model, which uses it) adds "module.", torch.compile adds "_orig_mod.".
_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class WeightsError(ValueError):
    """A weights file or state dict that does not fit the model; the message names the source."""


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _is_head_key(key: str) -> bool:
    return key.startswith(HEAD + ".")


def _key_list(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper (the training loop compiles in
    place, ``nn.Module.compile``, which adds no wrapper)."""
    while isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def _strip_wrapper_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``state`` without wrapper prefixes, stacked ones included (DDP of a compiled
    model gives ``module._orig_mod.``).

    Hand-written rather than ``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present``:
    that strips the prefix from whichever keys have it, so a model with a submodule that
    happens to be named ``module`` would have only those keys renamed and load wrong (or
    overwrite a same-named key), and it edits the caller's dict in place.
    """
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            # Only when every key has it: a prefix on some keys is a different model, not a wrapper.
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def _head_layer(model: nn.Module) -> nn.Linear:
    head = getattr(model, HEAD, None)
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"expected a torchvision ResNet with an nn.Linear '{HEAD}' head, "
            f"got {type(model).__name__} whose '{HEAD}' is {type(head).__name__}"
        )
    return head


def _load_failure(exc: BaseException) -> str:
    # torch.load's weights_only refusal wraps the useful error ("Unsupported global: ...")
    # in a page of advice to load unsafely, which must not reach the user as the fix.
    inner = exc.__cause__ or exc.__context__
    if inner is not None and "Weights only load failed" in str(exc):
        exc = inner
    text = " ".join(str(exc).split())
    first = text.split(". ")[0] if text else type(exc).__name__
    return first[:160]


def read_state_dict(path: Path | str) -> dict[str, Tensor]:
    """Read a state dict from a local file with ``torch.load(weights_only=True)``.

    Accepts a bare state dict (``torch.save(model.state_dict())``) or a checkpoint dict that
    holds one under ``"model"`` or ``"state_dict"``. Raises :class:`FileNotFoundError` when the
    file is missing and :class:`WeightsError` naming the file when it holds anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        # weights_only: a weights file must not be able to run code on load.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch state dict ({_load_failure(exc)}); expected "
            "a file written by torch.save(model.state_dict())"
        ) from exc
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        if isinstance(obj, Mapping):
            what = f"a dict with keys {_key_list(map(str, obj))}" if obj else "an empty dict"
        else:
            what = f"a {type(obj).__name__}"
        raise WeightsError(
            f"{path}: holds {what}, not a state dict of tensors; expected a file written by "
            "torch.save(model.state_dict())"
        )
    return dict(obj)


def build_resnet18(num_classes: int, *, weights_path: Path | str | None = None) -> ResNet:
    """A torchvision ResNet-18 with a ``num_classes``-way head.

    Without ``weights_path`` every weight is randomly initialised (the report's "scratch").
    With it, the backbone comes from that local ResNet-18 state dict (torchvision's ImageNet
    ``resnet18-f37072fd.pth``, or any ResNet-18 checkpoint such as the CAM16 classifier) and
    the head is fresh; the file's own head, whatever its width, is ignored.
    """
    _check_num_classes(num_classes)
    state = None
    if weights_path is not None:
        # Read (and fail on) the file before the costly random initialisation.
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"ResNet-18 weights file {path} not found; download torchvision's resnet18 "
                "ImageNet weights elsewhere and pass the file path"
            )
        state = read_state_dict(path)
    # weights=None always: a weights enum would download, and this library must work offline.
    model = resnet18(weights=None, num_classes=num_classes)
    if state is not None:
        load_backbone(model, state, source=str(weights_path))
    return model


def replace_head(
    model: ModuleT, num_classes: int, *, generator: torch.Generator | None = None
) -> ModuleT:
    """Replace the output layer with a fresh ``nn.Linear(512, num_classes)``, in place.

    The report's steps C-D. No other weight or buffer changes. The new layer has
    ``nn.Linear``'s default initialisation; with ``generator`` it is drawn from that generator
    (reproducible, and the global RNG is not consumed), otherwise from the global RNG. It is
    placed on the old head's device and dtype. Returns ``model``. Call it before wrapping the
    model in DDP or ``torch.compile``: wrappers would not see the new parameters.
    """
    _check_num_classes(num_classes)
    if unwrap_model(model) is not model:
        raise TypeError(
            f"replace_head got a wrapped model ({type(model).__name__}); replace the head "
            "before wrapping it in DistributedDataParallel or torch.compile"
        )
    old = _head_layer(model)
    device, dtype = old.weight.device, old.weight.dtype
    if generator is None:
        new = nn.Linear(old.in_features, num_classes, device=device, dtype=dtype)
    else:
        # skip_init: nn.Linear's constructor would draw from the global RNG first.
        new = torch.nn.utils.skip_init(
            nn.Linear, old.in_features, num_classes, device=generator.device, dtype=dtype
        )
        # The same distribution as nn.Linear.reset_parameters, drawn from the generator.
        nn.init.kaiming_uniform_(new.weight, a=math.sqrt(5), generator=generator)
        bound = 1.0 / math.sqrt(old.in_features)
        nn.init.uniform_(new.bias, -bound, bound, generator=generator)
        new = new.to(device)
    setattr(model, HEAD, new)
    return model


def backbone_state(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every parameter and buffer except the head, by state-dict key.

    Wrappers (DDP, ``torch.compile``) are looked through, so keys never carry ``module.``.
    The tensors are detached clones: a snapshot that later training does not change.
    """
    state = unwrap_model(model).state_dict()
    return {k: v.detach().clone() for k, v in state.items() if not _is_head_key(k)}


def load_backbone(model: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Copy a backbone into ``model`` from a state dict, leaving its head untouched.

    ``state`` is a ResNet-18 state dict, e.g. the CAM16 2-class classifier's; its ``fc.*`` keys
    are ignored, so the head may have any width. A ``module.`` (DDP) or ``_orig_mod.``
    (``torch.compile``) prefix on every key is removed, and ``model`` may itself be wrapped.
    Strict on the backbone: a missing, unexpected or differently shaped key raises
    :class:`WeightsError` naming ``source`` (a file path or description) and the keys.
    """
    target = unwrap_model(model)
    given = {k: v for k, v in _strip_wrapper_prefixes(state).items() if not _is_head_key(k)}
    expected = {k: v for k, v in target.state_dict().items() if not _is_head_key(k)}
    missing = expected.keys() - given.keys()
    unexpected = given.keys() - expected.keys()
    mismatched = sorted(
        f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected.keys() & given.keys()
        if given[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_key_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (file != model): {', '.join(mismatched[:6])}")
    if problems:
        raise WeightsError(
            f"{source}: not a ResNet-18 backbone that fits this model ({'; '.join(problems)})"
        )
    result = target.load_state_dict(given, strict=False)
    leftover = [k for k in result.missing_keys if not _is_head_key(k)]
    if leftover or result.unexpected_keys:
        # Unreachable after the checks above unless the model's state_dict is non-standard.
        raise WeightsError(f"{source}: backbone load left keys unset: {_key_list(leftover)}")


def to_channels_last(model: ModuleT) -> ModuleT:
    """Convert ``model`` to channels-last memory format in place, and return it.

    Channels-last is what cuDNN's tensor-core convolutions and oneDNN on CPU prefer (about
    +20% on the development CPU); feed it inputs made with
    ``x.contiguous(memory_format=torch.channels_last)``.
    """
    return model.to(memory_format=torch.channels_last)
