"""Stable Diffusion XL: a UNet and two CLIP text encoders, whose VAE overflows in float16."""

from __future__ import annotations

from typing import Any, ClassVar

from worker import tiny
from worker.families.clip import ClipUNetFamily


class SDXL(ClipUNetFamily):
    name: ClassVar[str] = "sdxl"
    encoder_pair: ClassVar[bool] = True
    # The original SDXL VAE makes NaNs in float16; its config says so (force_upcast), and a
    # VAE fine-tuned for float16 says it need not (the warm model reads that flag too).
    vae_upcast_in_half: ClassVar[bool] = True

    def tiny(self, seed: int) -> Any:
        """Two CLIP text encoders (the second with a projection), a UNet with SDXL's
        text-and-size conditioning and no attention at full latent resolution, the VAE with
        ``force_upcast`` as SDXL's."""
        import torch
        from diffusers import (
            EulerDiscreteScheduler,
            StableDiffusionXLPipeline,
            UNet2DConditionModel,
        )

        tokenizer = tiny.build_tokenizer()
        vocab = tokenizer.get_vocab()
        torch.manual_seed(seed)
        text_encoder = tiny.clip_text_encoder(vocab, with_projection=False)
        text_encoder_2 = tiny.clip_text_encoder(vocab, with_projection=True, projection_dim=32)
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            sample_size=128,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            # The two encoders' hidden states side by side (32 + 32).
            cross_attention_dim=64,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # Six size/crop numbers of 8 dims each, and the pooled projection of encoder 2.
            projection_class_embeddings_input_dim=6 * 8 + 32,
            norm_num_groups=32,
        )
        vae = tiny.image_vae(4, scaling_factor=0.13025, force_upcast=True)
        scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
            **tiny.SD_NOISE_SCHEDULE, timestep_spacing="leading"
        )
        return StableDiffusionXLPipeline(  # type: ignore[no-untyped-call]
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tiny.build_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
