"""A job's parameters against the catalogue: the checks both sides run, as diffusers'
``check_inputs``.

The API runs them at submit (a misfit is a 400 naming the field); the worker runs them again
before any GPU work, since a job can reach a worker by another way than this API's submit
(an older replica, a catalogue that changed while it waited, a record written by hand), and
fails a misfit with ``invalid_input``. Checks that need the images or the service's limits
stay in the API; the ones here need only the catalogue.
"""

from __future__ import annotations

from jobs.catalog import Catalog, ModelEntry
from jobs.families import SCHEDULER_MIN_STEPS
from jobs.protocol import AnyParams, Txt2ImgParams, Txt2VideoParams


class Misfit(ValueError):
    """The job asks for something its model cannot do; `param` is the field to blame."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def total_steps(params: AnyParams) -> int:
    """Denoising steps the job runs: image-to-image jobs skip the first (1 - strength) of the
    schedule, as diffusers does."""
    steps = params.steps or 0
    if isinstance(params, Txt2ImgParams | Txt2VideoParams):
        return steps
    return max(1, int(steps * params.strength))


def check_fits(catalog: Catalog, model: ModelEntry, params: AnyParams) -> None:
    """What the job names exists for its model: the task, the adapters, the scheduler."""
    if params.type not in model.tasks:
        tasks = ", ".join(model.tasks)
        raise Misfit(f"model {model.id} does not do {params.type}; it does {tasks}", "type")
    fitting = {a.id: a for a in catalog.adapters_for(model)}
    for lora in params.loras:
        if lora.id not in fitting:
            known = ", ".join(fitting) or "none"
            what = (
                "does not fit"
                if any(a.id == lora.id for a in catalog.adapters)
                else "is not in the catalogue; it is unknown to"
            )
            raise Misfit(
                f"adapter {lora.id!r} {what} model {model.id} (its adapters: {known})", "loras"
            )
    if params.scheduler is not None and params.scheduler not in model.schedulers:
        raise Misfit(
            f"scheduler {params.scheduler!r} is not available for model {model.id}; "
            f"choose one of {', '.join(model.schedulers)}",
            "scheduler",
        )


def check_resolved(model: ModelEntry, params: AnyParams) -> None:
    """A job with its defaults filled in runs within its model's and scheduler's limits."""
    if isinstance(params, Txt2VideoParams) and (params.num_frames or 0) > model.max_frames:
        raise Misfit(
            f"num_frames: model {model.id} makes at most {model.max_frames} frames", "num_frames"
        )
    minimum = SCHEDULER_MIN_STEPS.get(params.scheduler or "", 1)
    steps = total_steps(params)
    if steps < minimum:
        raise Misfit(
            f"scheduler {params.scheduler} needs at least {minimum} denoising steps; "
            f"this job would run {steps}",
            "steps",
        )


def check_job(catalog: Catalog, params: AnyParams) -> None:
    """Both checks, for a job whose defaults are filled in (as the worker receives it)."""
    model = catalog.get(params.model)
    if model is None:
        raise Misfit(f"model {params.model!r} is not in the catalogue", "model")
    check_fits(catalog, model, params)
    check_resolved(model, params)
