"""Errors a user can act on. Every message names what is wrong and how to fix it."""


class LibraGenError(Exception):
    """Base class: a problem with the user's input, files or settings, not a bug."""


class CheckpointError(LibraGenError):
    """A weights file is missing, damaged, or not what the caller expected."""


class InputError(LibraGenError):
    """An argument, image, prompt or size the pipeline cannot use."""


class ConfigError(LibraGenError):
    """A configuration file or value (schedule, training config) is invalid."""


class Cancelled(LibraGenError):
    """Work was stopped on request (a progress callback asked to cancel)."""
