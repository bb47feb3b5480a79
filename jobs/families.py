"""The model families, as the API and the catalogue see them: what each family's diffusers
pipelines can do (tasks, schedulers) and the defaults of its catalogue entries.

`FAMILY_RULES` is the one table of families: the catalogue checks an entry's `family`
against it, and the worker's classes (`worker.families`) follow it, checked at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from jobs import defaults
from jobs.protocol import JobType

_NOISE_SCHEDULERS = (
    "euler",
    "euler_a",
    "ddim",
    "ddpm",
    "pndm",
    "lms",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "dpmpp_sde",
    "unipc",
    "lcm",
)
"""For the UNets that predict noise (or v)."""

SCHEDULER_NAMES = (*_NOISE_SCHEDULERS, "flow_euler")
"""Stable scheduler names a catalogue entry may list; the worker maps each to a diffusers class."""

SCHEDULER_MIN_STEPS = {"pndm": 4}
"""Schedulers that cannot run fewer denoising steps (PNDM's warm-up takes four)."""

IMAGE_TASKS = (JobType.TXT2IMG, JobType.IMG2IMG, JobType.INPAINT, JobType.OUTPAINT)

# Flow-matching transformers: FlowMatchEuler, and the multistep solvers in their flow-sigma form.
_FLOW_SCHEDULERS = ("flow_euler", "unipc", "dpmpp_2m")


@dataclass(frozen=True)
class FamilyRules:
    """What a family's diffusers pipelines can do, and the defaults of its entries."""

    tasks: tuple[JobType, ...]
    """Tasks it has a pipeline for; an entry lists none else."""
    schedulers: tuple[str, ...]
    """Schedulers that fit its denoiser."""
    default_schedulers: tuple[str, ...]
    """An entry's `schedulers` when it lists none."""
    native_size: tuple[int, int]
    default_guidance: float
    flow_matching: bool
    """A rectified-flow transformer (velocity along a straight path, shifted sigmas)."""
    from_image_schedulers: tuple[str, ...] | None = None
    """When set, the only schedulers an entry that lists img2img, inpaint or outpaint may list
    (the pipelines that start from an image need them)."""
    max_sequence_length: int | None = None
    """T5 tokens of the prompt (families with a T5 encoder)."""
    dtype_cuda: str = "float16"
    """What `dtype = "auto"` means on CUDA."""
    adapters: bool = True
    """Catalogue LoRA adapters may name it (the worker loads them into its pipelines)."""


FAMILY_RULES: dict[str, FamilyRules] = {
    "sd1": FamilyRules(
        tasks=IMAGE_TASKS,
        schedulers=_NOISE_SCHEDULERS,
        default_schedulers=("euler", "euler_a", "ddim", "dpmpp_2m", "unipc"),
        native_size=(512, 512),
        default_guidance=defaults.GUIDANCE_DEFAULT,
        flow_matching=False,
    ),
    "sdxl": FamilyRules(
        tasks=IMAGE_TASKS,
        schedulers=_NOISE_SCHEDULERS,
        default_schedulers=("euler", "euler_a", "ddim", "dpmpp_2m", "unipc"),
        native_size=(1024, 1024),
        default_guidance=defaults.GUIDANCE_DEFAULT,
        flow_matching=False,
    ),
    # SD3 and Flux img2img/inpaint pipelines noise the input with FlowMatchEuler's
    # `scale_noise`, which the multistep solvers lack: those serve text-to-image only.
    "sd3": FamilyRules(
        tasks=IMAGE_TASKS,
        schedulers=_FLOW_SCHEDULERS,
        default_schedulers=("flow_euler",),
        native_size=(1024, 1024),
        default_guidance=7.0,
        flow_matching=True,
        from_image_schedulers=("flow_euler",),
        max_sequence_length=256,
        dtype_cuda="bfloat16",
    ),
    "flux": FamilyRules(
        tasks=IMAGE_TASKS,
        schedulers=_FLOW_SCHEDULERS,
        default_schedulers=("flow_euler",),
        native_size=(1024, 1024),
        default_guidance=3.5,
        flow_matching=True,
        from_image_schedulers=("flow_euler",),
        max_sequence_length=512,
        dtype_cuda="bfloat16",
    ),
    # Chroma: Flux's layout with T5 alone and real classifier-free guidance (a negative
    # prompt); diffusers has its text-to-image pipeline only in the auto pipelines. Its
    # pipeline hands the scheduler its own sigmas, which DPM++ 2M cannot take.
    "chroma": FamilyRules(
        tasks=(JobType.TXT2IMG,),
        schedulers=("flow_euler", "unipc"),
        default_schedulers=("flow_euler",),
        native_size=(1024, 1024),
        default_guidance=3.0,
        flow_matching=True,
        max_sequence_length=512,
        dtype_cuda="bfloat16",
    ),
    # Wan 2.1 text-to-video; its releases ship UniPC with flow sigmas.
    "video": FamilyRules(
        tasks=(JobType.TXT2VIDEO,),
        schedulers=_FLOW_SCHEDULERS,
        default_schedulers=("unipc", "flow_euler", "dpmpp_2m"),
        native_size=(832, 480),
        default_guidance=5.0,
        flow_matching=True,
        max_sequence_length=512,
        dtype_cuda="bfloat16",
        adapters=False,
    ),
}
"""Per family: its tasks, schedulers and defaults. The one list of families: `FAMILIES`, the
catalogue's check of an entry's family and the worker's classes (`worker.families`) follow it."""

FAMILIES = tuple(FAMILY_RULES)
"""Model families the worker knows how to load."""


def _known_family(value: str) -> str:
    if value not in FAMILY_RULES:
        raise ValueError(f"unknown family {value!r}; one of {', '.join(FAMILIES)}")
    return value


Family = Annotated[str, AfterValidator(_known_family)]
"""A family's name, one of `FAMILIES`."""
