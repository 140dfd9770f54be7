"""The custom ComfyUI types this pack passes between its nodes, and the values behind them.

A LIBRAGEN_MODEL value is never mutated once a node has returned it: other branches of the graph
may hold the same value. Nodes that change a model (LoRA Merge) return a new value that shares the
loaded modules and adds a weight patch, applied only while that value is sampling (see runtime.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from libragen_core.lora import LoraWeights
from libragen_core.models.bundle import ModelBundle

MODEL = "LIBRAGEN_MODEL"
SUBJECTS = "LIBRAGEN_SUBJECTS"
CFG = "LIBRAGEN_CFG"

OFFLOAD_POLICIES = ("auto", "offload after use", "cpu only")
ATTENTION_CHOICES = ("auto", "math", "flash", "efficient")


@dataclass(frozen=True)
class LoraPatch:
    """A LoRA folded into the DiT (W += strength * dW) while a model value samples."""

    lora: LoraWeights
    strength: float
    label: str


@dataclass(frozen=True, eq=False)
class LibraGenModel:
    """What flows on a LIBRAGEN_MODEL wire.

    bundle: the loaded DiT + VAE + text encoder (shared, never modified outside a sampling run).
    patches: LoRA patches of this value only, applied in order for the duration of sampling.
    attention: scaled-dot-product backend choice for the DiT (ATTENTION_CHOICES).
    offload: placement policy (OFFLOAD_POLICIES).
    handles: per-module placement state kept by the adapter (ComfyUI model patchers); shared by
        every value derived from the same loaded bundle so ComfyUI sees each module once.
    """

    bundle: ModelBundle
    name: str
    patches: tuple[LoraPatch, ...] = ()
    attention: str = "auto"
    offload: str = "auto"
    handles: dict = field(default_factory=dict, repr=False)

    def with_patches(self, *patches: LoraPatch) -> LibraGenModel:
        return replace(self, patches=self.patches + tuple(patches))

    def __str__(self) -> str:
        # what ComfyUI shows of an input value in an error report (the dataclass repr would print
        # every module and the model's absolute folder)
        return f"{MODEL}({self.describe()})"

    def describe(self) -> str:
        text = self.name
        if self.patches:
            text += " + " + ", ".join(f"{p.label} x{p.strength:g}" for p in self.patches)
        return text
