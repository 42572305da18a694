"""What ``precision = "auto"`` means on a CPU: flags, the measured probe, its cache, the override."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from wbc.training import hardware
from wbc.training.distributed import autocast
from wbc.training.hardware import CPU_PRECISION_ENV, cpu_precision, native_bf16, resolve_precision
from wbc.training.resnet import build_resnet18

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_vnni"}
SAPPHIRE_RAPIDS = AVX512_NO_BF16 | {"avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.fixture(autouse=True)
def _unforced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test decides for itself; no answer carried over from another test."""
    monkeypatch.delenv(CPU_PRECISION_ENV, raising=False)
    cpu_precision.cache_clear()
    yield
    cpu_precision.cache_clear()


def _probe_counting(monkeypatch: pytest.MonkeyPatch, speedup: float) -> list[int]:
    calls: list[int] = []

    def fake(**_: object) -> dict[str, float]:
        calls.append(torch.get_num_threads())
        return {"fp32_seconds": speedup, "bf16_seconds": 1.0, "speedup": speedup}

    monkeypatch.setattr(hardware, "measure_cpu_bf16", fake)
    return calls


def test_native_bf16_is_read_from_the_flags() -> None:
    assert not native_bf16(AVX2_ONLY)
    assert not native_bf16(AVX512_NO_BF16)
    assert native_bf16(SAPPHIRE_RAPIDS)
    assert native_bf16(AVX512_NO_BF16 | {"avx512_bf16"})


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX512_NO_BF16])
def test_a_cpu_without_native_bf16_stays_fp32_and_never_probes(
        monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    calls = _probe_counting(monkeypatch, speedup=5.0)  # would say bf16 if it were asked
    assert cpu_precision(1)[0] == "fp32"
    assert "no native bf16" in cpu_precision(1)[1]
    assert resolve_precision(torch.device("cpu"), "auto") == "fp32"
    assert calls == []
    x = torch.randn(2, 3, 32, 32)
    with autocast(torch.device("cpu"), "auto"):
        assert build_resnet18(5)(x).dtype == torch.float32


def test_native_bf16_that_measures_faster_runs_bf16(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    monkeypatch.setenv("WBC_CACHE_DIR", str(tmp_path))
    calls = _probe_counting(monkeypatch, speedup=1.83)
    precision, why = cpu_precision(1)
    assert precision == "bf16" and "1.83x" in why
    assert calls == [1]  # measured at the threads asked for
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # autocast asks at the thread count the loop runs with
    try:
        with autocast(torch.device("cpu"), "auto"):
            assert build_resnet18(5)(torch.randn(2, 3, 32, 32)).dtype == torch.bfloat16
    finally:
        torch.set_num_threads(before)
    # Kept per machine: a new process (the cache cleared) reads the answer instead of probing.
    cpu_precision.cache_clear()
    assert cpu_precision(1)[0] == "bf16" and calls == [1]
    [kept] = (tmp_path / "precision").glob("cpu-*.json")
    assert json.loads(kept.read_text())["speedup"] == 1.83


def test_native_bf16_that_measures_no_faster_stays_fp32(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    monkeypatch.setenv("WBC_CACHE_DIR", str(tmp_path))
    _probe_counting(monkeypatch, speedup=1.05)  # within the probe's noise of a tie
    assert cpu_precision(1)[0] == "fp32"


def test_the_environment_forces_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setenv(CPU_PRECISION_ENV, "bf16")
    assert cpu_precision(1) == ("bf16", f"forced by {CPU_PRECISION_ENV}=bf16")
    cpu_precision.cache_clear()
    monkeypatch.setenv(CPU_PRECISION_ENV, "fp8")
    with pytest.raises(ValueError, match=f"{CPU_PRECISION_ENV}='fp8'.*bf16 or fp32"):
        cpu_precision(1)


def test_explicit_settings_and_gpus_do_not_ask_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_precision", lambda threads=None: pytest.fail("asked"))
    assert resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    assert resolve_precision(torch.device("cpu"), "bf16") == "bf16"
    assert resolve_precision(torch.device("cuda", 0), "auto") == "bf16"
    assert resolve_precision("cuda:1", "auto") == "bf16"


def test_the_probe_measures_both_precisions() -> None:
    probe = hardware.measure_cpu_bf16(image_size=16, batch_size=4, steps=1)
    assert probe["fp32_seconds"] > 0 and probe["bf16_seconds"] > 0
    assert probe["speedup"] == pytest.approx(probe["fp32_seconds"] / probe["bf16_seconds"])
