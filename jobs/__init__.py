"""The job contract shared by the HTTP layer (`app`) and the GPU side (`worker`).

Request and record models, statuses, error codes, Redis key and queue names, the model
catalogue and image storage live here. Nothing in this package imports fastapi or torch.
"""
