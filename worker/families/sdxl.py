"""Stable Diffusion XL: a UNet and two CLIP text encoders, whose VAE overflows in float16."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from worker.families.base import BaseFamily
from worker.prompts import encode_pair


class SDXL(BaseFamily):
    name: ClassVar[str] = "sdxl"
    channels_last: ClassVar[bool] = True
    # The original SDXL VAE makes NaNs in float16; its config says so (force_upcast), and a
    # VAE fine-tuned for float16 says it need not (the warm model reads that flag too).
    vae_upcast_in_half: ClassVar[bool] = True

    def denoiser(self, pipe: Any) -> Any:
        return pipe.unet

    def encode_prompts(
        self,
        pipe: Any,
        prompts: list[str],
        negatives: list[str | None],
        device: torch.device | str,
        *,
        guidance_scale: float,
        weighting: bool = False,
    ) -> dict[str, torch.Tensor]:
        return encode_pair(
            pipe, prompts, negatives, device, guidance_scale=guidance_scale, weighting=weighting
        )
