"""GPU faults a job can recover from, and those it cannot.

Out of memory: free the cache and run the images one at a time. Black (NaN) output: decode
again with the VAE in float32. Any other CUDA error: the process must be replaced
(`WorkerBroken`). A job that fails for a reason of its own raises `JobFailed` with its code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

from PIL import Image

from jobs.errors import FailureCode
from jobs.protocol import AnyParams

log = logging.getLogger(__name__)


class JobFailed(Exception):
    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WorkerBroken(Exception):
    """The device is in a state no job can recover from (a CUDA error other than OOM)."""


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def is_device_broken(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "AcceleratorError" or any(
        sign in text
        for sign in ("CUDA error", "device-side assert", "illegal memory access", "cuDNN error")
    )


def is_blank(image: Image.Image) -> bool:
    """All black: what NaNs from an overflowing half-precision VAE decode to."""
    return image.getbbox() is None  # no pixel has any non-zero channel


if TYPE_CHECKING:  # the warm models import torch; this module does not need it to load
    from worker.warm import WarmBase

P = TypeVar("P", bound=AnyParams)
Output = TypeVar("Output")


def run_with_fault_handling(
    model: WarmBase,
    params: P,
    run: Callable[[P, bool], Sequence[Output]],
    is_bad: Callable[[Output], bool] = is_blank,  # type: ignore[assignment]
) -> list[Output]:
    """Run a job's pipeline call through the GPU faults a job can recover from.

    Out of memory: free the cache, and run the images one at a time (same seeds, so the same
    images); if that too runs out, the job fails `out_of_memory` and the worker goes on.
    Black (NaN) output: run again decoding with the VAE in float32; still black, the job fails
    `invalid_output`. Any other CUDA error: `WorkerBroken` — the process must be replaced.
    """
    parts = [params]
    try:
        outputs = list(run(params, False))
    except Exception as exc:
        if is_device_broken(exc) and not is_out_of_memory(exc):
            raise WorkerBroken(str(exc)) from exc
        if not is_out_of_memory(exc):
            raise
        model.release()
        if params.n == 1:
            raise JobFailed(
                FailureCode.OUT_OF_MEMORY, "the device ran out of memory; try a smaller size"
            ) from None
        log.warning("out of memory with %d images at once; running them one by one", params.n)
        parts = [
            cast(P, params.model_copy(update={"n": 1, "seed": seed})) for seed in params.seeds()
        ]
        try:
            outputs = [image for part in parts for image in run(part, False)]
        except Exception as again:
            if not is_out_of_memory(again):
                raise
            model.release()
            raise JobFailed(
                FailureCode.OUT_OF_MEMORY,
                "the device ran out of memory even one image at a time; try a smaller size",
            ) from None
    if any(is_bad(output) for output in outputs):
        log.warning("black output (NaN in the decode); decoding again in float32")
        outputs = [output for part in parts for output in run(part, True)]
        if any(is_bad(output) for output in outputs):
            raise JobFailed(
                FailureCode.INVALID_OUTPUT,
                "the model produced black images (NaN), even decoded in float32",
            )
    return outputs
