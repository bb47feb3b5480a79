"""Limits and defaults of the public contract, in one place.

Each constant is documented where it is defined; `docs/api.md` is the source of truth for the
limits.
"""

from typing import Final

PROMPT_MAX_CHARS: Final = 4000
"""A prompt holds 1 to this many characters after trimming."""

SIZE_MIN: Final = 64
"""Smallest width or height of an output image, in pixels."""

SIZE_MAX: Final = 2048
"""Largest width or height of an output image (and of an input image), in pixels."""

SIZE_MULTIPLE: Final = 8
"""Requested widths and heights are multiples of this: the VAE downsamples by 8."""

STEPS_MAX: Final = 150
"""Most denoising steps a job may ask for."""

GUIDANCE_MAX: Final = 30.0
"""Largest classifier-free guidance scale."""

GUIDANCE_DEFAULT: Final = 7.5
"""Guidance scale when neither the request nor the model's catalogue entry sets one."""

SEED_MAX: Final = 2**32 - 1
"""Seeds are unsigned 32-bit integers; image i of a job uses (seed + i) mod 2**32."""

N_MAX: Final = 8
"""Most images one job may produce."""

FRAMES_MAX: Final = 257
"""Most frames one txt2video job may ask for (a model's catalogue entry may allow fewer)."""

FPS_MAX: Final = 60
"""Highest frame rate of a txt2video result."""

VIDEOS_MAX: Final = 4
"""Most videos one txt2video job may produce."""

LORAS_MAX: Final = 4
"""Most LoRA adapters one job may apply at once."""

LORA_SCALE_MAX: Final = 4.0
"""Largest magnitude of a LoRA adapter's scale (negative scales are allowed)."""

MASK_BLUR_MAX: Final = 64
"""Largest feather radius of an inpaint or outpaint mask, in pixels."""

MASK_BLUR_DEFAULT: Final = 8
"""Feather radius when the request does not give one."""

OUTPAINT_OVERLAP: Final = 16
"""How far the outpaint mask reaches into the original image, in pixels, so the seam is
repainted and blends; the rest of the original is composited back unchanged."""

STRENGTH_DEFAULT: Final = 1.0
"""Inpaint/outpaint denoising strength when the request does not give one."""

IMG2IMG_STRENGTH_DEFAULT: Final = 0.75
"""img2img strength when the request does not give one: the input's layout survives."""

INPUT_IMAGE_FORMATS: Final = ("PNG", "JPEG", "WEBP")
"""Formats accepted for input images (Pillow format names)."""

JOB_ID_PREFIX: Final = "j_"
"""Job ids look like `j_` followed by 22 URL-safe characters."""

PROGRESS_MIN_INTERVAL_S: Final = 0.1
"""A worker writes a job's progress at most this often (plus the last step)."""

WEBHOOK_PROGRESS_INTERVAL_S: Final = 1.0
"""A job's `progress` webhooks are sent at most this often (plus the last step)."""

WORKER_PRESENCE_TTL_S: Final = 15
"""A worker's presence key expires this long after its last heartbeat."""

WORKER_HEARTBEAT_S: Final = 5
"""How often a worker refreshes its presence key."""
