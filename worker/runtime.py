"""How a model runs on its device: device, dtype, attention kernels, channels-last, compile,
VAE upcast and tiling.

`choose_runtime` is a pure function of the model's family, the device and the settings; the
warm models (`worker.pipelines`) apply what it chose and report it in their ``config``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from worker.families import family_of
from worker.settings import VAE_TILING_PIXELS_DEFAULT


@dataclass(frozen=True)
class Runtime:
    """How one model runs. Chosen by `choose_runtime`; what was applied is `model.config`."""

    family: str
    device: str
    """`cpu`, `cuda` or `cuda:N`."""
    dtype: str
    """`float32`, `float16` or `bfloat16`: the weights and the denoising."""
    attention: str
    """`xformers` or `sdpa` (PyTorch's scaled-dot-product attention)."""
    channels_last: bool
    """UNet weights and activations in NHWC, which CUDA convolutions run faster."""
    compile: bool
    """The UNet or transformer goes through `torch.compile`, warmed up at the native size."""
    vae_upcast: bool
    """The VAE decodes in float32 while the rest runs in half precision."""
    vae_tiling_pixels: int
    """Outputs above this many pixels decode in tiles, a job's images one at a time (0: never)."""

    @property
    def is_cuda(self) -> bool:
        return self.device.split(":")[0] == "cuda"

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def choose_runtime(
    family: str,
    device: str,
    dtype_setting: str = "auto",
    *,
    attention: str = "auto",
    xformers_available: bool = False,
    compile: bool = False,
    vae_tiling_pixels: int = VAE_TILING_PIXELS_DEFAULT,
) -> Runtime:
    """Decide how a model of `family` runs on `device` (`cpu`, `cuda`, `cuda:N`).

    - dtype `auto`: on CUDA, float16 for the UNet families (sd1, sdxl) and bfloat16 for the
      transformers (sd3, flux, chroma, video), which were trained in it and overflow in
      float16; on the CPU always float32 (half-precision CPU kernels are slow or missing), unless
      bfloat16 is named.
    - the VAE decodes in float32 where half precision overflows: SDXL's in float16 (when its
      config asks for it, as the original does), and Wan's, which its authors run in float32.
    - attention: xformers on CUDA when it imports (`auto`) or is asked for; PyTorch SDPA
      otherwise. Asking for xformers on CUDA without it is a configuration error.
    - channels-last for UNets on CUDA; `torch.compile` only on CUDA.
    """
    model_family = family_of(family)
    if dtype_setting not in ("auto", *_DTYPES):
        raise ValueError(f"unknown dtype {dtype_setting!r}")
    if attention not in ("auto", "xformers", "sdpa"):
        raise ValueError(f"unknown attention {attention!r}")
    cuda = device.split(":")[0] == "cuda"
    if not cuda:
        dtype = "bfloat16" if dtype_setting == "bfloat16" else "float32"
    elif dtype_setting == "auto":
        dtype = model_family.rules.dtype_cuda
    else:
        dtype = dtype_setting
    if cuda and attention == "xformers" and not xformers_available:
        raise ValueError(
            "attention is xformers but xformers does not import: install the cuda extra "
            "(pip install '.[cuda]') or set LATENTQ_ATTENTION=auto or sdpa"
        )
    half = dtype != "float32"
    return Runtime(
        family=family,
        device=device,
        dtype=dtype,
        attention="xformers" if cuda and attention != "sdpa" and xformers_available else "sdpa",
        channels_last=cuda and model_family.channels_last,
        compile=cuda and compile,
        vae_upcast=cuda and half and model_family.vae_upcast_in_half,
        vae_tiling_pixels=vae_tiling_pixels,
    )


def xformers_importable() -> bool:
    """Whether `import xformers.ops` works (it can be installed yet broken for this torch)."""
    try:
        importlib.import_module("xformers.ops")
    except Exception:
        return False
    return True


def resolve_device(requested: str) -> str:
    """`auto` → `cuda` when a GPU is there, else `cpu`; anything else as given (checked)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    torch.device(requested)  # raises for a name torch does not know
    return requested


@dataclass(frozen=True)
class Device:
    """Where a model runs, in torch's terms."""

    torch_device: torch.device
    dtype: torch.dtype
    attention: str

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"


def pick_device(requested: str, dtype_name: str, family: str = "sd1") -> Device:
    """The device and dtype `choose_runtime` picks (with SDPA attention)."""
    runtime = choose_runtime(family, resolve_device(requested), dtype_name, attention="sdpa")
    return Device(torch.device(runtime.device), runtime.torch_dtype, runtime.attention)
