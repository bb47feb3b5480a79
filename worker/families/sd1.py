"""Stable Diffusion 1.x and 2.x: a UNet and one CLIP text encoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from worker.families.base import BaseFamily
from worker.prompts import encode_one


class SD1(BaseFamily):
    name: ClassVar[str] = "sd1"
    channels_last: ClassVar[bool] = True

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
        return encode_one(
            pipe, prompts, negatives, device, guidance_scale=guidance_scale, weighting=weighting
        )
