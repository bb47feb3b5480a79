"""Warm pipelines: loaded once per process, shared by every job, fresh state per job.

`load_model` gives the class that fits a catalogue entry's family: a `WarmModel` for the
image families (sd1, sdxl, sd3, flux) holds one text-to-image pipeline and the img2img and
inpainting pipelines derived from it with `from_pipe` (`worker.image_model`); a
`WarmVideoModel` holds a text-to-video pipeline, Wan (`worker.video_model`).

Both run every family the same way and ask the family's class (`worker.families`) for what
differs. How a model runs — device, dtype, attention, compile — is `worker.runtime`'s choice,
applied by what every warm model shares (`worker.warm`) and reported by each model's
`config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jobs.catalog import ModelEntry
from worker.image_model import WarmModel
from worker.runtime import choose_runtime, resolve_device, xformers_importable
from worker.settings import VAE_TILING_PIXELS_DEFAULT
from worker.video_model import WarmVideoModel

__all__ = ["WarmModel", "WarmVideoModel", "load_model"]


def load_model(
    entry: ModelEntry,
    source: str | Path,
    device: str = "auto",
    *,
    attention: str = "auto",
    compile: bool = False,
    vae_tiling_pixels: int = VAE_TILING_PIXELS_DEFAULT,
    adapters: Sequence[tuple[str, Path]] = (),
) -> WarmModel | WarmVideoModel:
    """Load `entry` from `source` (a diffusers folder or hub id) into the class of its family,
    with the LoRA `adapters` (id, file) its jobs may switch on."""
    resolved = resolve_device(device)
    runtime = choose_runtime(
        entry.family,
        resolved,
        entry.dtype,
        attention=attention,
        xformers_available=resolved.startswith("cuda") and xformers_importable(),
        compile=compile,
        vae_tiling_pixels=vae_tiling_pixels,
    )
    if entry.is_video:
        return WarmVideoModel(entry, source, runtime)
    return WarmModel(entry, source, runtime, adapters=adapters)
