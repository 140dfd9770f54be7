"""Headless batch rendering through ComfyUI's HTTP API (`libragen batch`)."""
from .client import ComfyClient, JobFailed, LocalWriteError, ServerDown
from .jobs import Job, JobSpecError, load_workflow, parse_jobs, resolve_job
from .manifest import Manifest
from .scheduler import AllServersDown, BatchOptions, BatchRunner, Progress, Summary

__all__ = [
    "AllServersDown", "BatchOptions", "BatchRunner", "ComfyClient", "Job", "JobFailed", "JobSpecError",
    "LocalWriteError", "Manifest", "Progress", "ServerDown", "Summary", "load_workflow", "parse_jobs",
    "resolve_job",
]
