"""Flux: a guidance-distilled rectified-flow transformer, CLIP and T5, latents packed 2×2."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from worker.families.base import BaseFamily


class Flux(BaseFamily):
    name: ClassVar[str] = "flux"
    # Guidance is an input of the transformer, not a second pass with a negative prompt.
    negative_prompt: ClassVar[bool] = False

    def size_multiple(self, pipe: Any) -> int:
        # The VAE's factor times the 2×2 packing of the latents.
        return int(pipe.vae_scale_factor) * 2

    def vae_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> Any:
        unpacked = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        return super().vae_latents(pipe, unpacked, width, height)
