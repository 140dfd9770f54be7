"""Shared training pieces: config, checkpoints, data, losses, EMA, logging, validation, loop."""
