"""Stable Diffusion 3: a rectified-flow transformer (MMDiT), two CLIP encoders and T5."""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image

from worker import tiny
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

    def tiny(self, seed: int) -> Any:
        """Two CLIP encoders with projections and a T5 encoder feeding an MMDiT, a 16-channel
        VAE with SD3's scale and shift, flow matching."""
        import torch
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )

        tokenizer = tiny.build_tokenizer()
        vocab = tokenizer.get_vocab()
        t5_tokenizer = tiny.build_t5_tokenizer()
        torch.manual_seed(seed)
        text_encoder = tiny.clip_text_encoder(vocab, with_projection=True, projection_dim=32)
        text_encoder_2 = tiny.clip_text_encoder(vocab, with_projection=True, projection_dim=32)
        # The CLIP hidden states (32 + 32) are padded to the T5 width: T5 is at least as wide.
        text_encoder_3 = tiny.t5_encoder(t5_tokenizer, d_model=64)
        transformer = SD3Transformer2DModel(  # type: ignore[no-untyped-call]
            sample_size=64,
            patch_size=2,
            in_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=64,
            caption_projection_dim=32,
            pooled_projection_dim=64,  # the two CLIP projections side by side
            out_channels=16,
            # Positions for latents up to 256 per side (2048 pixels): any size a job may ask.
            pos_embed_max_size=128,
        )
        vae = tiny.image_vae(
            16,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
            force_upcast=False,
        )
        return StableDiffusion3Pipeline(  # type: ignore[no-untyped-call]
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),  # type: ignore[no-untyped-call]
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tiny.build_tokenizer(),
            text_encoder_3=text_encoder_3,
            tokenizer_3=t5_tokenizer,
        )
