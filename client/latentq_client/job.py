"""The Job object of the API, with waiting and the download of its images or videos."""

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

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
}

VIDEO_JOB_TYPES = frozenset({"txt2video"})
"""Job types whose results are videos (`result.videos`) rather than images."""

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
    def video_results(self) -> list[dict[str, Any]]:
        """`result.videos`: url (MP4), webp_url (the same clip as an animated WebP), width,
        height, num_frames, fps, seed and content_type of each video."""
        videos = (self.result or {}).get("videos") or []
        return [dict(video) for video in videos if isinstance(video, dict)]

    @property
    def is_video(self) -> bool:
        """Whether the job makes videos rather than images."""
        return self.type in VIDEO_JOB_TYPES or "videos" in (self.result or {})

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The results of either kind: `video_results` of a video job, else `image_results`."""
        return self.video_results if self.is_video else self.image_results

    @property
    def seeds(self) -> list[int]:
        return [int(output["seed"]) for output in self.outputs if "seed" in output]

    def _update(self, raw: Mapping[str, Any]) -> None:
        self.raw = dict(raw)

    def _check(self) -> None:
        """Raise the job's outcome if it ended without results."""
        if self.status == "failed":
            error = self.error or {}
            code = str(error.get("code") or "failed")
            message = str(error.get("message") or f"job {self.id} failed")
            raise JobFailed(self, code, message)
        if self.status == "canceled":
            raise JobCanceled(self, "canceled", f"job {self.id} was canceled")

    def _refuse_video(self) -> None:
        if self.is_video:
            raise ValueError(
                f"job {self.id} is a {self.type} job: its results are videos, not images; "
                "use file_bytes() or save()"
            )

    def _check_webp(self, webp: bool) -> None:
        if webp and not self.is_video:
            raise ValueError(
                f"webp=True is for video jobs; job {self.id} is a {self.type} job "
                "(an image job chooses its format with output_format when submitted)"
            )

    def _urls(self, webp: bool) -> list[str]:
        if not webp:
            return [str(output["url"]) for output in self.outputs]
        urls = [video.get("webp_url") for video in self.video_results]
        if not all(urls):
            raise ValueError(f"job {self.id} has no animated WebP of its videos")
        return [str(url) for url in urls]

    def _extensions(self, webp: bool) -> list[str]:
        if webp:
            return [".webp"] * len(self.outputs)
        fallback = ".mp4" if self.is_video else ".png"
        return [
            _EXTENSIONS.get(str(output.get("content_type")))
            or Path(str(output.get("url", "")).split("?")[0]).suffix
            or fallback
            for output in self.outputs
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

    def file_bytes(self, *, webp: bool = False) -> list[bytes]:
        """The bytes of each image or MP4 video (waits for the job first if needed).

        `webp=True`: each video as an animated WebP instead (video jobs only).
        """
        self._check_webp(webp)
        self.wait()
        return [self._client._fetch(url) for url in self._urls(webp)]

    def image_bytes(self) -> list[bytes]:
        """The encoded bytes of each image; ValueError for a video job."""
        self._refuse_video()
        return self.file_bytes()

    def images(self) -> list[PILImage]:
        """Each image as a PIL image; needs pillow. ValueError for a video job."""
        return [_open_image(data) for data in self.image_bytes()]

    def save(self, path_or_dir: PathLike, *, webp: bool = False) -> list[Path]:
        """Write the images or videos and return their paths (`output_paths` has the names).

        Videos are written as `.mp4`, or with `webp=True` as animated `.webp`.
        """
        self._check_webp(webp)
        self.wait()
        paths = output_paths(path_or_dir, self.id, self._extensions(webp))
        return _write(paths, self.file_bytes(webp=webp))


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

    async def file_bytes(self, *, webp: bool = False) -> list[bytes]:
        """As `Job.file_bytes`."""
        self._check_webp(webp)
        await self.wait()
        return [await self._client._fetch(url) for url in self._urls(webp)]

    async def image_bytes(self) -> list[bytes]:
        self._refuse_video()
        return await self.file_bytes()

    async def images(self) -> list[PILImage]:
        return [_open_image(data) for data in await self.image_bytes()]

    async def save(self, path_or_dir: PathLike, *, webp: bool = False) -> list[Path]:
        """As `Job.save`."""
        self._check_webp(webp)
        await self.wait()
        paths = output_paths(path_or_dir, self.id, self._extensions(webp))
        return _write(paths, await self.file_bytes(webp=webp))


def output_paths(target: PathLike, job_id: str, extensions: list[str]) -> list[Path]:
    """Where `save` writes files (images or videos) with these extensions.

    - an existing directory, or a path ending in a separator: `<dir>/<job id>.png`, or
      `<job id>-1.png`, `<job id>-2.png`, … for several files;
    - a name with a suffix: exactly that file for one file, `name-1.png`, `name-2.png`, … for
      several;
    - a name without a suffix: `name.png` (the file's own extension), or `name-1.png`, ….
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
