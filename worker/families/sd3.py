"""Stable Diffusion 3: a rectified-flow transformer (MMDiT), two CLIP encoders and T5."""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image

from worker.families.base import BaseFamily


class SD3(BaseFamily):
    name: ClassVar[str] = "sd3"

    def size_multiple(self, pipe: Any) -> int:
        # The VAE's factor times the transformer's patch size.
        return int(pipe.vae_scale_factor) * int(pipe.transformer.config.patch_size)

    def img2img_images(self, image: Image.Image, count: int) -> Any:
        # SD3's img2img encodes image i with generator i and has no copies of a single image
        # to give the others: hand it one per output.
        return [image] * count if count > 1 else image

    def _shift(self, pipe: Any, shift: float) -> float:
        if type(pipe).__name__ == "StableDiffusion3InpaintPipeline":
            # Its own decode leaves the shift out (diffusers 0.42): decode as it does, so
            # that a float32 re-run gives the image the job would have had.
            return 0.0
        return shift
