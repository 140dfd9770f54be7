"""Stand-in Text: CONDITIONING shaped like umT5-XXL's, without the 6.7 GB text encoder.

The features are random numbers seeded by the text's checksum: the same text always gives the
same features, another text other features, and none of it means anything to a model. They let a
native graph (UNETLoader -> ... -> SamplerCustomAdvanced) run end to end where the text encoder is
absent or too large: the integration tests, and checking a graph's wiring, memory and speed
before downloading umT5.
"""
from __future__ import annotations

import zlib

import torch

UMT5_WIDTH = 4096


def standin_features(text: str, tokens: int = 32, width: int = UMT5_WIDTH) -> torch.Tensor:
    """[1, tokens, width] float32: one seeded row per word plus one (umT5's end token), then zeros
    (core's umT5 encoding zeroes the padded positions too)."""
    rows = min(tokens, len(text.split()) + 1)
    generator = torch.Generator().manual_seed(zlib.crc32(text.encode("utf-8")))
    features = torch.zeros(1, tokens, width)
    features[0, :rows] = torch.randn(rows, width, generator=generator)
    return features


class LibraGenStandInText:
    DESCRIPTION = ("CONDITIONING with umT5-XXL's shape, made without a text encoder: random features seeded by the "
                   "text (the same text gives the same features). They mean nothing to a model; use them to run a "
                   "Wan graph end to end without the 6.7 GB text encoder (wiring, memory and speed checks, tests), "
                   "and CLIPTextEncode with CLIPLoader type wan for real videos.")
    CATEGORY = "LibraGen/testing"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Stand-in text features [1, tokens, width] in place of CLIPTextEncode's output.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": "",
                                "tooltip": "Any text: it seeds the features (a linked Prompt Rewrite output works)."}),
            "tokens": ("INT", {"default": 32, "min": 1, "max": 512,
                               "tooltip": "Sequence length; one row per word plus one is filled, the rest is zero."}),
            "width": ("INT", {"default": UMT5_WIDTH, "min": 1, "max": 8192,
                              "tooltip": "Feature width: 4096 for Wan2.1 / Phantom-Wan (umT5-XXL)."}),
        }}

    def encode(self, text, tokens, width):
        return ([[standin_features(text, tokens, width), {}]],)
