"""Text-to-video models (Wan 2.1): `txt2video` gives one list of frames per video."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from jobs import resolved
from jobs.catalog import ModelEntry
from jobs.protocol import Txt2VideoParams
from jobs.resolved import Sampling
from worker.families.video import Video
from worker.runtime import Device, Runtime
from worker.schedulers import make_scheduler
from worker.warm import StepCallback, WarmBase, round_up, step_end


class WarmVideoModel(WarmBase):
    """A text-to-video model (Wan 2.1): `txt2video` gives one list of frames per video."""

    def __init__(
        self,
        entry: ModelEntry,
        source: str | Path,
        runtime: Runtime | Device,
        attention: str = "auto",
    ) -> None:
        started = time.perf_counter()
        self._setup(entry, runtime, attention)
        if not isinstance(self.family, Video):
            raise ValueError(f"model {entry.id} is not a video model: load it with WarmModel")
        self.video = self.family
        try:
            pipe = self.video.load(str(source), self.runtime.torch_dtype)
        except ValueError as exc:
            raise ValueError(f"model {entry.id}: {exc}") from exc
        self._apply(pipe)
        self.vae_upcast = self.runtime.vae_upcast
        if self.vae_upcast:
            # Wan's causal video VAE is run in float32 by its authors; it is small.
            pipe.vae.to(torch.float32)
        self.pipe = pipe
        self._scheduler_config = pipe.scheduler.config
        self.frame_multiple = self.video.frame_multiple(pipe)
        self.size_multiple = self.video.size_multiple(pipe)
        self._warm_up()
        self.load_s = time.perf_counter() - started

    def _warm_up(self) -> None:
        if self.runtime.compile:
            width, height = self._run_size(*self.entry.native_size)
            frames, steps = self.run_frames(self.entry.default_frames), 2
        else:
            width, height, frames, steps = 64, 64, 1, 1
        with torch.inference_mode():
            self.pipe(
                **self._text_kwargs("warm up", None),
                num_inference_steps=steps,
                width=width,
                height=height,
                num_frames=frames,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="latent",
            )

    def run_frames(self, frames: int) -> int:
        """The frame count the pipeline runs for `frames`: the next 4k+1 (the VAE's temporal
        factor); the extra frames are dropped."""
        step = self.frame_multiple
        return round_up(max(frames - 1, 0), step) + 1

    def _run_size(self, width: int, height: int) -> tuple[int, int]:
        return round_up(width, self.size_multiple), round_up(height, self.size_multiple)

    def _text_kwargs(self, prompt: Any, negative: Any) -> dict[str, Any]:
        return self.family.text_kwargs(prompt, negative, self.entry.max_sequence_length)

    def txt2video(
        self, params: Txt2VideoParams, on_step: StepCallback, decode_fp32: bool = False
    ) -> list[list[Image.Image]]:
        """`params.n` videos of `params.num_frames` frames at the params' size, video i from
        seed `params.seeds()[i]`."""
        run = Sampling.of(params)
        wanted = resolved.size(params)
        wanted_frames, _ = resolved.frames(params)
        self.pipe.scheduler = make_scheduler(
            run.scheduler, self._scheduler_config, flow_matching=True
        )
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in run.seeds()]
        width, height = self._run_size(*wanted)
        frames = self.run_frames(wanted_frames)
        self._vae_mode(self.pipe.vae, width, height, len(generators))
        with torch.inference_mode():
            result = self.pipe(
                **self._text_kwargs(run.prompt, run.negative_prompt or None),
                num_inference_steps=run.steps,
                guidance_scale=run.guidance_scale,
                num_videos_per_prompt=run.n,
                width=width,
                height=height,
                num_frames=frames,
                generator=generators,
                callback_on_step_end=step_end(on_step),
                output_type="latent" if decode_fp32 else "pil",
            )
            videos: list[list[Image.Image]] = (
                self._decode_fp32(result.frames, width, height) if decode_fp32 else result.frames
            )
        return [
            [
                frame if frame.size == wanted else frame.resize(wanted, Image.Resampling.LANCZOS)
                for frame in video[:wanted_frames]
            ]
            for video in videos
        ]

    def _decode_fp32(
        self, latents: torch.Tensor, width: int, height: int
    ) -> list[list[Image.Image]]:
        """Decode with the VAE in float32 (as the pipeline does, latents un-normalised)."""
        vae = self.pipe.vae
        dtype = vae.dtype
        if dtype != torch.float32:
            vae.to(torch.float32)
        try:
            latents = self.video.vae_latents(self.pipe, latents.to(torch.float32), width, height)
            decoded = vae.decode(latents, return_dict=False)[0]
        finally:
            if dtype != torch.float32:
                vae.to(dtype)
        videos: list[list[Image.Image]] = self.pipe.video_processor.postprocess_video(
            decoded, output_type="pil"
        )
        return videos
