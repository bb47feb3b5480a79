"""Flux: a guidance-distilled rectified-flow transformer, CLIP and T5, latents packed 2×2."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from worker import tiny
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

    def tiny(self, seed: int) -> Any:
        """Dev-like (guidance embedded, dynamic shift): a CLIP and a T5 encoder, one double and
        one single stream block over 2x2-packed 16-channel latents."""
        from diffusers import FluxPipeline, FluxTransformer2DModel

        tokenizer = tiny.build_tokenizer()
        t5_tokenizer = tiny.build_t5_tokenizer()
        torch.manual_seed(seed)
        text_encoder = tiny.clip_text_encoder(tokenizer.get_vocab(), with_projection=False)
        text_encoder_2 = tiny.t5_encoder(t5_tokenizer, d_model=32)
        transformer = FluxTransformer2DModel(  # type: ignore[no-untyped-call]
            patch_size=1,
            in_channels=4 * 16,  # 2x2 patches of the VAE's 16 channels
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,  # T5 width
            pooled_projection_dim=32,  # CLIP width
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
        )
        vae, scheduler = self._tiny_vae_and_scheduler()
        return FluxPipeline(  # type: ignore[no-untyped-call]
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )

    def _tiny_vae_and_scheduler(self) -> tuple[Any, Any]:
        """Flux's 16-channel VAE (its scale and shift) and its time-shifted flow matching."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        vae = tiny.image_vae(
            16,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
            force_upcast=False,
        )
        scheduler = FlowMatchEulerDiscreteScheduler(  # type: ignore[no-untyped-call]
            num_train_timesteps=1000,
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
        return vae, scheduler
