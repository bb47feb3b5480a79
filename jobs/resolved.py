"""A resolved job's settings, typed as the pipelines need them.

The API fills every default of a job from its model's catalogue entry before storing it
(`app.service.JobService._resolve`): steps, guidance, scheduler, seed, size, frames. The
params models keep those fields optional, since a request may leave them out; `Sampling`
and `size` are the worker's view of params after that, with no None left, and they refuse
params that skipped it rather than hand a pipeline a None.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.protocol import (
    JobParams,
    LoraRef,
    Txt2ImgParams,
    Txt2VideoParams,
    consecutive_seeds,
)


class Unresolved(ValueError):
    """Params that still lack a value the catalogue fills in."""


@dataclass(frozen=True)
class Sampling:
    """What one denoising run takes from a job: prompts, steps, guidance, scheduler, seeds,
    adapters."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    scheduler: str
    seed: int
    n: int
    loras: tuple[LoraRef, ...]

    @classmethod
    def of(cls, params: JobParams) -> Sampling:
        """The sampling settings of resolved `params`; `Unresolved` names what is unset."""
        steps, guidance, scheduler, seed = (
            params.steps,
            params.guidance_scale,
            params.scheduler,
            params.seed,
        )
        if steps is None or guidance is None or scheduler is None or seed is None:
            unset = [
                name
                for name in ("steps", "guidance_scale", "scheduler", "seed")
                if getattr(params, name) is None
            ]
            raise Unresolved(f"job params not resolved against the catalogue: {unset} unset")
        return cls(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or "",
            steps=steps,
            guidance_scale=guidance,
            scheduler=scheduler,
            seed=seed,
            n=params.n,
            loras=params.loras,
        )

    def seeds(self) -> list[int]:
        """The seed of each output: consecutive from the job's seed."""
        return consecutive_seeds(self.seed, self.n)


def size(params: Txt2ImgParams | Txt2VideoParams) -> tuple[int, int]:
    """The (width, height) of a resolved text-to-image or text-to-video job."""
    if params.width is None or params.height is None:
        raise Unresolved("job params not resolved against the catalogue: size unset")
    return params.width, params.height


def frames(params: Txt2VideoParams) -> tuple[int, int]:
    """The (frames, fps) of a resolved text-to-video job."""
    if params.num_frames is None or params.fps is None:
        raise Unresolved("job params not resolved against the catalogue: frames unset")
    return params.num_frames, params.fps
