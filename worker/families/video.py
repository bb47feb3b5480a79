"""Text to video (Wan 2.1): a flow-matching transformer, UMT5, a causal video VAE."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from worker.families.base import BaseFamily


class Video(BaseFamily):
    name: ClassVar[str] = "video"
    # Wan's video VAE is run in float32 by its authors; it is small.
    vae_upcast_in_half: ClassVar[bool] = True

    def load(self, source: str, dtype: torch.dtype) -> Any:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            source, dtype=dtype
        )
        takes_frames = "num_frames" in inspect.signature(type(pipe).__call__).parameters
        if not hasattr(pipe, "vae_scale_factor_temporal") or not takes_frames:
            raise ValueError(
                f"{source} holds a {type(pipe).__name__}, not a text-to-video pipeline of the "
                "video family (Wan)"
            )
        return pipe

    def size_multiple(self, pipe: Any) -> int:
        patch = pipe.transformer.config.patch_size
        return max(16, int(pipe.vae_scale_factor_spatial) * int(patch[1]))

    def frame_multiple(self, pipe: Any) -> int:
        """Frames come in 4k+1: the VAE's temporal factor."""
        return int(pipe.vae_scale_factor_temporal)

    def vae_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> Any:
        vae = pipe.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device)
        std = torch.tensor(vae.config.latents_std).view(shape).to(latents.device)
        return latents * std + mean
