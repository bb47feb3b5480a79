"""The HTTP layer of latentq: routes, validation, signed file serving and metrics.

Imports `jobs`, never `worker` or torch.
"""
