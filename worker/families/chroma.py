"""Chroma: Flux's transformer layout with T5 alone, and real classifier-free guidance."""

from __future__ import annotations

from typing import Any, ClassVar

from worker import tiny
from worker.families.flux import Flux


class Chroma(Flux):
    name: ClassVar[str] = "chroma"
    # Unlike Flux, guidance is a second pass with the negative prompt.
    negative_prompt: ClassVar[bool] = True

    def tiny(self, seed: int) -> Any:
        """A T5 encoder, one double and one single stream block over 2x2-packed 16-channel
        latents, Flux's VAE, a small guidance approximator."""
        import torch
        from diffusers import ChromaPipeline, ChromaTransformer2DModel

        t5_tokenizer = tiny.build_t5_tokenizer()
        torch.manual_seed(seed)
        text_encoder = tiny.t5_encoder(t5_tokenizer, d_model=32)
        transformer = ChromaTransformer2DModel(  # type: ignore[no-untyped-call]
            patch_size=1,
            in_channels=4 * 16,  # 2x2 patches of the VAE's 16 channels
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,  # T5 width
            axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
            approximator_num_channels=16,
            approximator_hidden_dim=32,
            approximator_layers=1,
        )
        vae, scheduler = self._tiny_vae_and_scheduler()
        return ChromaPipeline(  # type: ignore[no-untyped-call]
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=t5_tokenizer,
            transformer=transformer,
        )
