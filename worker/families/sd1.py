"""Stable Diffusion 1.x and 2.x: a UNet and one CLIP text encoder."""

from __future__ import annotations

from typing import Any, ClassVar

from worker import tiny
from worker.families.clip import ClipUNetFamily


class SD1(ClipUNetFamily):
    name: ClassVar[str] = "sd1"

    def tiny(self, seed: int) -> Any:
        import torch
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

        tokenizer = tiny.build_tokenizer()
        torch.manual_seed(seed)
        # CLIPTextConfig's own projection width (the plain encoder has no projection).
        text_encoder = tiny.clip_text_encoder(
            tokenizer.get_vocab(), with_projection=False, projection_dim=512
        )
        # diffusers' constructors are untyped (wrapped by register_to_config).
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            # diffusers reads this as the number of heads. Full-resolution self-attention over
            # 64x64 latents dominates CPU time and scales with heads, not head width: 8 heads
            # made a 512px 20-step run ~4x slower than 2.
            attention_head_dim=2,
            norm_num_groups=32,
        )
        return StableDiffusionPipeline(  # type: ignore[no-untyped-call]
            vae=tiny.image_vae(4, sample_size=64),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(**tiny.SD_NOISE_SCHEDULE),  # type: ignore[no-untyped-call]
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
