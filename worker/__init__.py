"""The GPU side of latentq: warm pipelines, job runners, the RQ worker process.

Imports `jobs`, never `app` or fastapi. Torch and diffusers are imported where pipelines are
built or run, so `worker.imaging` and the settings stay cheap to import.
"""
