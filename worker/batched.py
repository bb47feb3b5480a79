"""One pipeline call for several compatible txt2img jobs (micro-batching).

The jobs share size, steps, scheduler and guidance (`jobs.batching.batch_key`); their
prompts differ. Each image keeps its own CPU generator seeded from its job, so its starting
noise is exactly what it would have been alone; what the batch changes is only the float
rounding of batched matrix products (at most 1/255 on a handful of pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeGuard

from PIL import Image

from jobs.protocol import Txt2ImgParams
from jobs.resolved import Sampling

if TYPE_CHECKING:
    from worker.image_model import WarmModel
    from worker.video_model import WarmVideoModel

StepCallback = Callable[[int, int], None]


def supports_batching(model: WarmModel | WarmVideoModel) -> TypeGuard[WarmModel]:
    """Image models whose text-to-image pipeline takes a list of prompts and generators."""
    return hasattr(model, "txt2img") and hasattr(model, "base")


def txt2img_many(
    model: WarmModel,
    jobs: list[Txt2ImgParams],
    on_step: StepCallback,
    decode_fp32: bool = False,
) -> list[list[Image.Image]]:
    """Run `jobs` (resolved, sharing a batch key) in one call; their images, job by job."""
    first = jobs[0]
    runs = [Sampling.of(job) for job in jobs]
    prompts = [run.prompt for run in runs for _ in range(run.n)]
    negatives = [run.negative_prompt for run in runs for _ in range(run.n)]
    seeds = [seed for run in runs for seed in run.seeds()]
    batch = first.model_copy(update={"n": 1})
    images = model.txt2img(
        batch,
        on_step,
        decode_fp32=decode_fp32,
        prompts=prompts,
        negative_prompts=negatives,
        seeds=seeds,
    )
    groups: list[list[Image.Image]] = []
    start = 0
    for job in jobs:
        groups.append(images[start : start + job.n])
        start += job.n
    return groups
