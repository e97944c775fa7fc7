"""Applying an artifact's INT8 activation parameters at run time (docs/FORMAT.md, "Activation quantization").

An artifact quantized with calibration data carries, per calibrated layer and time group, the INT8 parameters of
that layer's input: ``arrowquant.time_groups.activation_params[LAYER][g] = {"scale": s, "zero": z}``. A runtime
that quantizes activations (W4A8, W8A8, ...) looks up the group of the current timestep and fake-quantizes (or
quantizes) the layer's input with the group's params. ``activation_quantizer`` builds that runtime side from the
artifact alone; its instances are hooks of the form ``hook(layer, x, t)`` (the digits DiT's ``forward`` takes
one).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .artifact import metadata
from .errors import ModelFormatError


class ActivationQuantizer:
    """INT8 asymmetric, per-tensor activation quantization with one (scale, zero) per layer and time group.

    For input x of ``layer`` at timestep t in group g: ``q = clip(round(x / scale_g) + zero_g, 0, 255)`` and
    ``x̂ = (q - zero_g) · scale_g`` (float32). A timestep outside the calibrated range takes the nearest group
    (the first below it, the last above it).
    """

    def __init__(self, time_groups: dict):
        if not time_groups or not time_groups.get("groups"):
            raise ModelFormatError("the artifact has no time groups (quantize with enable_time_aware)")
        self.groups = time_groups["groups"]
        self.starts = np.array([g["timestep_start"] for g in self.groups], np.float64)
        self.ends = np.array([g["timestep_end"] for g in self.groups], np.float64)
        self.params = {layer: [(np.float32(p["scale"]), np.float32(p["zero"])) for p in ps]
                       for layer, ps in (time_groups.get("activation_params") or {}).items()}
        if not self.params:
            raise ModelFormatError("the artifact has no activation parameters (quantize with calibration data)")
        self.space = time_groups.get("timestep_space")

    @property
    def layers(self):
        return sorted(self.params)

    def group(self, t) -> np.ndarray:
        """The time group index of each timestep in t (scalar or array): [start, end) of a group, the last
        group's end included, clamped to the first/last group outside the calibrated range."""
        t = np.asarray(t, np.float64)
        g = np.searchsorted(self.starts, t, side="right") - 1
        return np.clip(g, 0, len(self.groups) - 1)

    def scale_zero(self, layer: str, t) -> Optional[tuple]:
        """(scale, zero) arrays for each timestep of t, or None if the layer has no params."""
        ps = self.params.get(layer)
        if ps is None:
            return None
        g = self.group(t)
        table = np.array(ps, np.float32)  # [groups, 2]
        return table[g, 0], table[g, 1]

    def quantize(self, layer: str, x: np.ndarray, t) -> Optional[np.ndarray]:
        """The uint8 codes of x, layer's input at timestep(s) t (one per row of x when t is an array)."""
        sz = self.scale_zero(layer, t)
        if sz is None:
            return None
        s, z = (_rows(v, x) for v in sz)
        return np.clip(np.round(x / s) + z, 0, 255).astype(np.uint8)

    def __call__(self, layer: str, x: np.ndarray, t) -> Optional[np.ndarray]:
        """Fake-quantized x (float32), or None (x unchanged) for a layer without params: a forward hook."""
        sz = self.scale_zero(layer, t)
        if sz is None:
            return None
        s, z = (_rows(v, x) for v in sz)
        q = np.clip(np.round(x / s) + z, 0, 255)
        return ((q - z) * s).astype(np.float32)


def _rows(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broadcast per-row (or one) values over x's trailing dimensions."""
    v = np.asarray(v, np.float32)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def activation_quantizer(path) -> ActivationQuantizer:
    """The runtime side of the artifact's activation parameters: ``path`` is an output directory (or its
    model.arrow) quantized with calibration data and enable_time_aware."""
    md = metadata(path)
    return ActivationQuantizer(md.get("arrowquant.time_groups"))
