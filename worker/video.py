"""Encoding generated frames as files people can play: H.264 MP4 and animated WebP."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image

MP4_CONTENT_TYPE = "video/mp4"
WEBP_CONTENT_TYPE = "image/webp"


def encode_mp4(frames: list[Image.Image], fps: int) -> bytes:
    """H.264 in an MP4 with yuv420p pixels and the index at the front (`+faststart`), which
    is what browsers, phones and players decode, and what starts playing while it downloads."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("a video needs at least one frame")
    width, height = frames[0].size
    # ffmpeg writes to a seekable file (the MP4 index is rewritten at the end).
    handle, path = tempfile.mkstemp(suffix=".mp4", prefix="latentq-")
    os.close(handle)
    try:
        writer = imageio.get_writer(
            path,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            quality=8,
            # Sizes are multiples of 8 already: no rescale to imageio's default of 16.
            macro_block_size=8 if width % 16 or height % 16 else 16,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
        try:
            for frame in frames:
                writer.append_data(np.asarray(frame.convert("RGB")))
        finally:
            writer.close()
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)


def encode_webp(frames: list[Image.Image], fps: int) -> bytes:
    """An animated WebP that loops: shows inline anywhere an image does."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    buffer = io.BytesIO()
    first, *rest = (frame.convert("RGB") for frame in frames)
    first.save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=rest,
        duration=max(1, round(1000 / fps)),
        loop=0,
        quality=80,
        method=4,
    )
    return buffer.getvalue()
