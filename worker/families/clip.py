"""What the CLIP-only UNet families (SD 1.x, SDXL) share: prompts encoded here, in chunks."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from worker import prompts as chunked
from worker.families.base import BaseFamily


class ClipUNetFamily(BaseFamily):
    """A UNet with CLIP text encoders only, which read 77 tokens: the worker encodes longer
    prompts in chunks of 75 (`worker.prompts`) and hands the pipeline the embeddings."""

    channels_last: ClassVar[bool] = True
    encoder_pair: ClassVar[bool] = False
    """Two CLIP encoders side by side, the second giving a pooled vector (SDXL)."""

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
        return chunked.encode(
            pipe,
            prompts,
            negatives,
            device,
            guidance_scale=guidance_scale,
            weighting=weighting,
            pair=self.encoder_pair,
        )
