"""What every warm model shares: the runtime applied to a loaded pipeline, VAE tiling, what
the worker reports about a model, and small helpers of the pipeline calls.

The warm models themselves are `worker.image_model.WarmModel` (sd1, sdxl, sd3, flux) and
`worker.video_model.WarmVideoModel` (Wan); `worker.pipelines.load_model` picks one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from jobs.catalog import ModelEntry
from worker.families import Family, family_of
from worker.runtime import Device, Runtime, choose_runtime, xformers_importable

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (steps done, total steps)."""


class WarmBase:
    """The runtime, applied to a loaded pipeline, and what the worker reports about it."""

    entry: ModelEntry
    family: Family
    runtime: Runtime
    device: Device
    attention: str
    vae_upcast: bool
    load_s: float

    def _setup(self, entry: ModelEntry, runtime: Runtime | Device, attention: str) -> None:
        self.entry = entry
        self.family = family_of(entry.family)
        if isinstance(runtime, Device):
            runtime = choose_runtime(
                entry.family,
                str(runtime.torch_device),
                str(runtime.dtype).removeprefix("torch."),
                attention=attention,
                xformers_available=runtime.is_cuda and xformers_importable(),
            )
        self.runtime = runtime

    def _apply(self, pipe: Any) -> None:
        """Move `pipe` to the device and apply the runtime's choices to its modules."""
        runtime = self.runtime
        pipe.set_progress_bar_config(disable=True)
        pipe.to(torch.device(runtime.device))
        denoiser = self.family.denoiser(pipe)
        if runtime.channels_last:
            denoiser.to(memory_format=torch.channels_last)
        self.attention = "sdpa"
        if runtime.attention == "xformers":
            # The choice was made before this call (diffusers raises rather than degrade);
            # a GPU without a kernel for it can still refuse here.
            try:
                pipe.enable_xformers_memory_efficient_attention()
                self.attention = "xformers"
            except Exception as exc:
                log.warning("xformers failed (%s); using PyTorch SDPA", exc)
        if runtime.compile:
            # In place: the pipelines derived with from_pipe share this very module.
            denoiser.compile()
        self.device = Device(torch.device(runtime.device), runtime.torch_dtype, self.attention)

    def _vae_mode(self, vae: Any, width: int, height: int, count: int) -> None:
        # Set per call on the shared VAE: a worker runs one job at a time.
        limit = self.runtime.vae_tiling_pixels
        big = bool(limit) and width * height > limit
        many = bool(limit) and count > 1 and width * height * count > limit
        if big:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if many:
            vae.enable_slicing()
        else:
            vae.disable_slicing()

    @property
    def config(self) -> dict[str, Any]:
        """What this model runs with, as applied (the worker logs it at start)."""
        return {
            **asdict(self.runtime),
            "adapters": list(getattr(self, "adapters", ())),
            "attention": self.attention,
            "vae_upcast": self.vae_upcast,
            "load_s": round(self.load_s, 3),
        }

    def release(self) -> None:
        """Free what an aborted job left allocated on the GPU."""
        if self.device.is_cuda:
            import gc

            gc.collect()
            torch.cuda.empty_cache()


_CALL_PARAMETERS: dict[type, frozenset[str]] = {}
"""Parameters of each pipeline class's `__call__`, read once rather than on every job."""


def accepts(pipe: Any, name: str) -> bool:
    cls = type(pipe)
    if cls not in _CALL_PARAMETERS:
        _CALL_PARAMETERS[cls] = frozenset(inspect.signature(cls.__call__).parameters)
    return name in _CALL_PARAMETERS[cls]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def step_end(on_step: StepCallback) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    def step_end(
        pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        on_step(step + 1, pipeline.num_timesteps)
        return tensors

    return step_end
