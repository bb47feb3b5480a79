"""Train the shapes model's style adapter: a LoRA that draws every shape as an outline.

    python -m worker.shapes.lora MODEL OUT.safetensors [--steps N] [--work DIR]

The trained pipeline at MODEL stays frozen; rank-4 LoRA layers on the UNet's attention
projections and on its residual blocks' convolutions (the 16×16 level, where an outline's
width is decided, has no attention) learn the outlined scenes (the same labels and captions,
the shapes drawn as rings), so that a job naming the adapter draws rings and one without it
draws filled shapes.
Saved in diffusers' LoRA format (``save_lora_weights``), as any adapter of the catalogue.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from worker.adapters import DENOISER_TARGETS
from worker.shapes.scenes import caption, scenes
from worker.shapes.train import SEED, Captions, _images, log

ADAPTER = "outline"
TARGETS = (*DENOISER_TARGETS, "conv1", "conv2")
"""Attention projections and the residual blocks' 3×3 convolutions, which diffusers' LoRA
loader adapts too (``load_lora_weights`` takes convolution layers of a UNet)."""


def encode(pipe: Any, count: int) -> tuple[list[Any], Any, Any]:
    import torch

    labels = list(scenes(SEED + 5, count, two_shapes=0.3, style="outline"))
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, count, 64):
            posterior = pipe.vae.encode(_images(labels[start : start + 64])).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
    return labels, torch.cat(means), torch.cat(stds)


def train(
    model_dir: Path, out: Path, *, steps: int, batch: int, lr: float, rank: int, count: int
) -> Path:
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        str(model_dir), torch_dtype=torch.float32
    )
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    scale = pipe.vae.config.scaling_factor
    labels, mean, std = encode(pipe, count)
    log(f"encoded {count} outlined scenes")
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS))
    unet = inject_adapter_in_model(config, pipe.unet, adapter_name=ADAPTER)
    trained = [p for name, p in unet.named_parameters() if "lora_" in name]
    for parameter in trained:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    alphas_cumprod = pipe.scheduler.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = torch.clamp(snr, max=5.0) / snr
    captions = Captions(pipe.tokenizer)
    started = time.monotonic()
    for step in range(steps):
        rng = random.Random(SEED * 17 + step)
        index = torch.tensor([rng.randrange(count) for _ in range(batch)])
        texts = [caption(labels[i], rng) for i in index.tolist()]
        generator = torch.Generator().manual_seed(SEED + 3 + step)
        z = (mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator)) * scale
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=generator)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        with torch.no_grad():
            hidden = pipe.text_encoder(captions.ids(texts)).last_hidden_state
        for group in optimizer.param_groups:
            group["lr"] = (
                lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
            )
        predicted = unet(a.sqrt() * z + (1 - a).sqrt() * noise, t, hidden).sample
        loss = ((predicted - noise).pow(2).mean(dim=(1, 2, 3)) * weights[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 50 == 0:
            rate = (time.monotonic() - started) / (step + 1)
            log(f"lora {step + 1}/{steps} loss {loss.item():.4f} ({rate:.2f} s/step)")
    # Saved in peft's key format (``lora_A``/``lora_B``), which ``load_lora_weights`` reads
    # for attention and convolution layers alike; diffusers' older format, which
    # ``convert_state_dict_to_diffusers`` writes, covers only the attention layers, and a file
    # mixing both loads without its attention weights.
    layers = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    out.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        save_directory=str(out.parent),
        weight_name=out.name,
        safe_serialization=True,
        unet_lora_layers={k: v.to(torch.float16) for k, v in layers.items()},
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the trained shapes pipeline")
    parser.add_argument("out", type=Path, help="the adapter's .safetensors file")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    train(
        args.model,
        args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        rank=args.rank,
        count=args.scenes,
    )
    log(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
