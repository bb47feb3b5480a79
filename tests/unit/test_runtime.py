"""How a model runs on its device: the pure choice behind the CUDA path, checked on the CPU."""

from __future__ import annotations

import pytest

from jobs.families import FAMILIES
from worker.runtime import choose_runtime, pick_device, xformers_importable


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cpu_runs_float32_with_sdpa_and_nothing_cuda_only(family: str) -> None:
    for dtype in ("auto", "float32", "float16"):
        runtime = choose_runtime(
            family, "cpu", dtype, attention="auto", xformers_available=True, compile=True
        )
        assert runtime.dtype == "float32" and runtime.attention == "sdpa"
        assert not (runtime.channels_last or runtime.compile or runtime.vae_upcast)
        assert not runtime.is_cuda
    assert choose_runtime(family, "cpu", "bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize(
    ("family", "dtype", "upcast", "channels_last"),
    [
        ("sd1", "float16", False, True),
        ("sdxl", "float16", True, True),
        ("sd3", "bfloat16", False, False),
        ("flux", "bfloat16", False, False),
        ("video", "bfloat16", True, False),
    ],
)
def test_auto_on_cuda(family: str, dtype: str, upcast: bool, channels_last: bool) -> None:
    runtime = choose_runtime(family, "cuda:1", "auto")
    assert runtime.is_cuda and runtime.device == "cuda:1"
    assert runtime.dtype == dtype and runtime.vae_upcast is upcast
    assert runtime.channels_last is channels_last
    assert runtime.attention == "sdpa" and not runtime.compile


def test_an_explicit_dtype_is_kept_on_cuda() -> None:
    assert choose_runtime("flux", "cuda", "float16").dtype == "float16"
    full = choose_runtime("sdxl", "cuda", "float32")
    assert full.dtype == "float32" and not full.vae_upcast
    assert choose_runtime("sd1", "cuda", "bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize(
    ("setting", "available", "expected"),
    [
        ("auto", True, "xformers"),
        ("auto", False, "sdpa"),
        ("xformers", True, "xformers"),
        ("sdpa", True, "sdpa"),
        ("sdpa", False, "sdpa"),
    ],
)
def test_attention_on_cuda(setting: str, available: bool, expected: str) -> None:
    for family in FAMILIES:
        runtime = choose_runtime(family, "cuda", attention=setting, xformers_available=available)
        assert runtime.attention == expected


def test_xformers_asked_for_but_missing_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="xformers does not import"):
        choose_runtime("sd1", "cuda", attention="xformers", xformers_available=False)
    # On the CPU there is nothing to ask it for: SDPA.
    assert choose_runtime("sd1", "cpu", attention="xformers").attention == "sdpa"


def test_compile_and_vae_tiling_follow_the_settings() -> None:
    runtime = choose_runtime("flux", "cuda", compile=True, vae_tiling_pixels=1024 * 1024)
    assert runtime.compile and runtime.vae_tiling_pixels == 1024 * 1024
    assert choose_runtime("flux", "cuda").compile is False
    assert choose_runtime("sd1", "cpu", vae_tiling_pixels=0).vae_tiling_pixels == 0


def test_unknown_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="family"):
        choose_runtime("dalle", "cpu")
    with pytest.raises(ValueError, match="dtype"):
        choose_runtime("sd1", "cpu", "float8")
    with pytest.raises(ValueError, match="attention"):
        choose_runtime("sd1", "cpu", attention="flash")


def test_pick_device_on_the_cpu() -> None:
    import torch

    device = pick_device("cpu", "auto", "flux")
    assert device.torch_device == torch.device("cpu") and device.dtype == torch.float32
    assert not device.is_cuda and device.attention == "sdpa"
    assert isinstance(xformers_importable(), bool)
