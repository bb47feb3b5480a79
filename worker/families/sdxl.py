"""Stable Diffusion XL: a UNet and two CLIP text encoders, whose VAE overflows in float16."""

from __future__ import annotations

from typing import ClassVar

from worker.families.clip import ClipUNetFamily


class SDXL(ClipUNetFamily):
    name: ClassVar[str] = "sdxl"
    encoder_pair: ClassVar[bool] = True
    # The original SDXL VAE makes NaNs in float16; its config says so (force_upcast), and a
    # VAE fine-tuned for float16 says it need not (the warm model reads that flag too).
    vae_upcast_in_half: ClassVar[bool] = True
