"""Benchmarks of the service and of the pipelines it runs."""
