"""The Job object of the API, with waiting and image download."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentq_client.errors import JobCanceled, JobFailed
from latentq_client.progress import ProgressCallback

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from latentq_client.client import AsyncClient, Client

_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}

PathLike = str | os.PathLike[str]


class BaseJob:
    """The fields of a Job; `raw` is the JSON object as the API sent it."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw: dict[str, Any] = dict(raw)

    @property
    def id(self) -> str:
        return str(self.raw.get("id", ""))

    @property
    def status(self) -> str:
        return str(self.raw.get("status", ""))

    @property
    def type(self) -> str:
        return str(self.raw.get("type", ""))

    @property
    def model(self) -> str | None:
        model = self.raw.get("model")
        return str(model) if model is not None else None

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.raw.get("progress") or {})

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.raw.get("params") or {})

    @property
    def result(self) -> dict[str, Any] | None:
        result = self.raw.get("result")
        return dict(result) if isinstance(result, dict) else None

    @property
    def error(self) -> dict[str, Any] | None:
        error = self.raw.get("error")
        return dict(error) if isinstance(error, dict) else None

    @property
    def queue_position(self) -> int | None:
        position = self.raw.get("queue_position")
        return position if isinstance(position, int) else None

    @property
    def is_done(self) -> bool:
        return self.status in ("succeeded", "failed", "canceled")

    @property
    def image_results(self) -> list[dict[str, Any]]:
        """`result.images`: url, width, height, seed and content_type of each image."""
        images = (self.result or {}).get("images") or []
        return [dict(image) for image in images if isinstance(image, dict)]

    @property
    def seeds(self) -> list[int]:
        return [int(image["seed"]) for image in self.image_results if "seed" in image]

    def _update(self, raw: Mapping[str, Any]) -> None:
        self.raw = dict(raw)

    def _check(self) -> None:
        """Raise the job's outcome if it ended without images."""
        if self.status == "failed":
            error = self.error or {}
            code = str(error.get("code") or "failed")
            message = str(error.get("message") or f"job {self.id} failed")
            raise JobFailed(self, code, message)
        if self.status == "canceled":
            raise JobCanceled(self, "canceled", f"job {self.id} was canceled")

    def _extensions(self) -> list[str]:
        return [
            _EXTENSIONS.get(str(image.get("content_type")))
            or Path(str(image.get("url", "")).split("?")[0]).suffix
            or ".png"
            for image in self.image_results
        ]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseJob) and other.raw == self.raw

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, status={self.status!r})"


class Job(BaseJob):
    """A job of a `Client`."""

    def __init__(self, raw: Mapping[str, Any], client: Client) -> None:
        super().__init__(raw)
        self._client = client

    def refresh(self) -> Job:
        """Read the job again from the service."""
        self._update(self._client.get(self.id).raw)
        return self

    def cancel(self) -> Job:
        self._update(self._client.cancel(self.id).raw)
        return self

    def wait(
        self, timeout: float | None = None, progress: bool | ProgressCallback | None = None
    ) -> Job:
        """Wait for the end of the job and return it (this object, updated).

        Follows the events stream, or polls when the stream is unavailable. `progress`: None
        draws a bar on stderr when it is a terminal, True always, False never, or a callable
        that receives each `ProgressUpdate`. Raises `JobFailed`, `JobCanceled`, `WaitTimeout`.
        """
        if not self.is_done:
            self._update(self._client._wait(self, timeout, progress))
        self._check()
        return self

    def image_bytes(self) -> list[bytes]:
        """The encoded bytes of each image (waits for the job first if needed)."""
        self.wait()
        return [self._client._fetch(str(image["url"])) for image in self.image_results]

    def images(self) -> list[PILImage]:
        """Each image as a PIL image; needs pillow."""
        return [_open_image(data) for data in self.image_bytes()]

    def save(self, path_or_dir: PathLike) -> list[Path]:
        """Write the images and return their paths (see `output_paths` for the names)."""
        self.wait()
        paths = output_paths(path_or_dir, self.id, self._extensions())
        return _write(paths, self.image_bytes())


class AsyncJob(BaseJob):
    """A job of an `AsyncClient`; its methods are coroutines."""

    def __init__(self, raw: Mapping[str, Any], client: AsyncClient) -> None:
        super().__init__(raw)
        self._client = client

    async def refresh(self) -> AsyncJob:
        self._update((await self._client.get(self.id)).raw)
        return self

    async def cancel(self) -> AsyncJob:
        self._update((await self._client.cancel(self.id)).raw)
        return self

    async def wait(
        self, timeout: float | None = None, progress: bool | ProgressCallback | None = None
    ) -> AsyncJob:
        """As `Job.wait`."""
        if not self.is_done:
            self._update(await self._client._wait(self, timeout, progress))
        self._check()
        return self

    async def image_bytes(self) -> list[bytes]:
        await self.wait()
        return [await self._client._fetch(str(image["url"])) for image in self.image_results]

    async def images(self) -> list[PILImage]:
        return [_open_image(data) for data in await self.image_bytes()]

    async def save(self, path_or_dir: PathLike) -> list[Path]:
        await self.wait()
        paths = output_paths(path_or_dir, self.id, self._extensions())
        return _write(paths, await self.image_bytes())


def output_paths(target: PathLike, job_id: str, extensions: list[str]) -> list[Path]:
    """Where `save` writes images with these extensions.

    - an existing directory, or a path ending in a separator: `<dir>/<job id>.png`, or
      `<job id>-1.png`, `<job id>-2.png`, … for several images;
    - a name with a suffix: exactly that file for one image, `name-1.png`, `name-2.png`, … for
      several;
    - a name without a suffix: `name.png` (the image's own extension), or `name-1.png`, ….
    """
    raw = os.fspath(target)
    path = Path(raw)
    count = len(extensions)
    numbered = range(1, count + 1)
    if path.is_dir() or raw.endswith(("/", os.sep)):
        if count == 1:
            return [path / f"{job_id}{extensions[0]}"]
        return [path / f"{job_id}-{i}{ext}" for i, ext in zip(numbered, extensions, strict=True)]
    if path.suffix:
        if count == 1:
            return [path]
        return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in numbered]
    if count == 1:
        return [path.with_name(path.name + extensions[0])]
    return [
        path.with_name(f"{path.name}-{i}{ext}") for i, ext in zip(numbered, extensions, strict=True)
    ]


def _write(paths: list[Path], blobs: list[bytes]) -> list[Path]:
    for path, data in zip(paths, blobs, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return paths


def _open_image(data: bytes) -> PILImage:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "Job.images() needs pillow: pip install 'latentq-client[images]' "
            "(or use image_bytes() / save())"
        ) from None
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
