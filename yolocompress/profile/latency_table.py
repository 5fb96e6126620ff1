"""A per-layer latency model measured once on this machine: what a pruning latency budget needs (issue 18).

Every convolution of a model is a *site* (its module name, kernel, stride, groups and the spatial size of its
input at ``imgsz``). For each site, the input and output widths on a grid (fractions ``grid`` of its full
widths, rounded up to ``round_to`` channels, the full width always included) are timed as one layer (the
convolution and its SiLU, batch 1, ONNX Runtime with ``threads`` threads) by a ``timer``; shapes shared by
several sites are timed once. The predicted latency of a model with the same sites (the original or any
channel-pruned sub-net of it: pruning keeps module names) is the sum of its parts: each site's milliseconds,
interpolated bilinearly on its grid at the sub-net's widths (clamped to the grid's ends).

ONNX Runtime's x86 convolutions work on channels in blocks (its NCHWc layout: 16 channels with AVX-512, 8
with AVX2), so a layer's time is a step function of its widths: measured at 640 px on a 2-core AVX-512 Xeon
(3x3 conv, 80x80, 64 channels in), 24 output channels cost what 32 do (0.93 ms) and 40 what 48 do
(1.28 vs 1.23 ms), while 32 -> 40 is +37%. Widths are therefore priced at their *effective* width, rounded
up to ``block`` channels (:func:`channel_block`), and the grid's widths are multiples of it. Without this, a
uniform sub-net at ratio 0.45 (widths such as 56 and 24) was predicted at 0.445 of the original's latency
and measured at 0.525.

What the sum leaves out (the concatenations, resampling, pooling and Detect's decoding, and whatever ONNX
Runtime fuses across layers) does not shrink with the widths the same way, so a budget relative to the
original is best taken as ``ratio(sub-net, original)`` and checked against a measured latency of the chosen
sub-net. A table can carry a *calibration* (:meth:`LatencyTable.calibrated`): the fraction ``f`` of the whole
model's latency that does not shrink with the widths, fitted by least squares from a few sub-nets measured
whole beside the original (measured ratios ``m``, predicted ``p``: ``m ~ f + (1 - f) * p``); its ratios are
then ``f + (1 - f) * p``. Measured on a 2-core AVX-512 Xeon with the block pricing above and one uniform
sub-net: ``f`` = -0.004 for yolov5n and -0.041 for yolov5s at 640 px (the sums alone were nearly right; the
prediction errors of the chosen sub-nets -1.9% to +2.2%), -0.14 to -0.18 for yolov5n at 256 px, where that one
sub-net's plain prediction was 10% slow and uneven ones' 0-8%, so that the calibration made them 5-14% fast:
hence several sub-nets, uniform and uneven (``compress.prune.search.calibration_subnets``).

The table is cached as JSON in the cache folder (:func:`yolocompress.io.workdir.cache_dir`,
``latency-tables/``) under a key of the CPU model (:func:`~yolocompress.profile.cpu.cpu_name`), the image
size, the threads, the grid and the model's sites: a table measured on another CPU, at another size or for
another architecture is never reused; it is measured again. ``timer`` is injectable (tests use a
deterministic stub).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolocompress.errors import InputError
from yolocompress.io.atomic import atomic_write_json
from yolocompress.io.workdir import cache_dir, work_dir
from yolocompress.models.inputs import image_hw, input_channels
from yolocompress.profile.flops import meta_copy
from yolocompress.profile.cpu import cpu_flags, cpu_name
from yolocompress.profile.latency import measure_ort_latency

FORMAT = 2  # 2: priced at effective widths (``block``), calibration
DEFAULT_GRID = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
FIXED_FRACTION_RANGE = (-0.5, 0.9)  # a calibration's fitted fraction is clipped to this (a noisy run)


def channel_block(flags: Sequence[str] | None = None) -> int:
    """The channel block of ONNX Runtime's x86 convolution kernels on this CPU (its NCHWc layout): 16 with
    AVX-512 (``avx512f`` in ``flags``, default :func:`~yolocompress.profile.cpu.cpu_flags`), else 8."""
    return 16 if "avx512f" in (cpu_flags() if flags is None else flags) else 8


def effective_width(channels: int, block: int, full: int) -> int:
    """``channels`` rounded up to a multiple of ``block``, at most ``full``: what the layer costs."""
    return min(full, math.ceil(int(channels) / block) * block)


@dataclass(frozen=True)
class LayerShape:
    """One convolution as it runs: widths, kernel, stride, padding, groups and input height and width."""

    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    height: int
    width: int

    def key(self) -> str:
        """A stable text key (the JSON cache's)."""
        k, s, p = self.kernel, self.stride, self.padding
        return (f"{self.c_in}x{self.c_out}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-p{p[0]}x{p[1]}-g{self.groups}"
                f"-{self.height}x{self.width}")

    def resized(self, c_in: int, c_out: int) -> LayerShape:
        """The same layer with other widths (a depthwise layer keeps one group per channel)."""
        groups = c_in if self.groups > 1 and self.groups == self.c_in == self.c_out else self.groups
        return LayerShape(c_in, c_out, self.kernel, self.stride, self.padding, groups, self.height,
                          self.width)


LayerTimer = Callable[[LayerShape], float]  # milliseconds of one batch-1 call of the layer


@dataclass(frozen=True)
class Site:
    """A convolution of the model: its module name, its shape at full width and the widths timed."""

    name: str
    shape: LayerShape
    in_grid: tuple[int, ...]
    out_grid: tuple[int, ...]


def conv_shapes(model: nn.Module, imgsz: int | Sequence[int]) -> dict[str, LayerShape]:
    """``{module name: LayerShape}`` of every ``Conv2d`` of ``model`` at ``imgsz`` (batch 1; traced on a
    data-less ``meta`` copy, so it costs milliseconds and leaves ``model`` alone)."""
    h, w = image_hw(imgsz)
    net = meta_copy(model).eval()
    shapes: dict[str, LayerShape] = {}
    handles = []
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(module, args, name=name):
                x = args[0]
                shapes[name] = LayerShape(module.in_channels, module.out_channels, tuple(module.kernel_size),
                                          tuple(module.stride), tuple(module.padding), module.groups,
                                          int(x.shape[-2]), int(x.shape[-1]))
            handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            net(torch.zeros(1, input_channels(model), h, w, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def width_grid(channels: int, grid: Sequence[float], round_to: int) -> tuple[int, ...]:
    """The widths timed for a layer of ``channels``: each fraction of ``grid`` rounded up to a multiple of
    ``round_to`` (at least ``round_to``, at most ``channels``), and ``channels`` itself."""
    widths = {min(channels, max(round_to, math.ceil(f * channels / round_to) * round_to)) for f in grid}
    return tuple(sorted(widths | {channels}))


def _sites(shapes: dict[str, LayerShape], grid: Sequence[float], round_to: int) -> list[Site]:
    sites = []
    for name, s in shapes.items():
        if s.groups > 1 and not s.groups == s.c_in == s.c_out:  # grouped, not depthwise: timed as it is
            sites.append(Site(name, s, (s.c_in,), (s.c_out,)))
        elif s.groups > 1:  # depthwise: in = out, one axis
            widths = width_grid(s.c_in, grid, round_to)
            sites.append(Site(name, s, widths, widths))
        else:
            sites.append(Site(name, s, width_grid(s.c_in, grid, round_to),
                              width_grid(s.c_out, grid, round_to)))
    return sites


def _grid_shapes(site: Site) -> list[LayerShape]:
    if site.shape.groups > 1 and site.shape.groups == site.shape.c_in == site.shape.c_out:
        return [site.shape.resized(c, c) for c in site.in_grid]
    return [site.shape.resized(ci, co) for ci in site.in_grid for co in site.out_grid]


class OrtLayerTimer:
    """The default :data:`LayerTimer`: the layer (``Conv2d`` + SiLU, random weights) exported to ONNX and
    timed with ONNX Runtime (batch 1, ``threads`` intra-op threads, median of ``runs`` after ``warmup``)."""

    def __init__(self, threads: int = 2, warmup: int = 5, runs: int = 20):
        self.threads, self.warmup, self.runs = threads, warmup, runs

    def __call__(self, shape: LayerShape) -> float:
        layer = nn.Sequential(nn.Conv2d(shape.c_in, shape.c_out, shape.kernel, shape.stride, shape.padding,
                                        groups=shape.groups), nn.SiLU()).eval()
        x = torch.zeros(1, shape.c_in, shape.height, shape.width)
        with work_dir("yc-latency-table-") as tmp:
            path = Path(tmp) / "layer.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", category=DeprecationWarning)  # the TorchScript exporter's
                torch.onnx.export(layer, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                                  output_names=["y"])
            result = measure_ort_latency(path, threads=self.threads, warmup=self.warmup, runs=self.runs)
        return result.median_ms


@dataclass
class LatencyTable:
    """Measured milliseconds of every site's widths on its grid; see the module doc.

    Attributes:
        key: what the table was measured for (CPU model, image size, threads, grid, round_to, sites digest).
        sites: the model's convolutions and the widths timed.
        ms: milliseconds per :meth:`LayerShape.key`.
        path: the cache file it was read from or written to (``None``: not cached).
        measured: layers timed by this call (0: read from the cache).
        calibration: ``None`` (ratios are the plain sums') or what :meth:`calibrated` fitted:
            ``fixed_fraction`` and the measurement it came from.
    """

    key: dict[str, Any]
    sites: list[Site]
    ms: dict[str, float]
    path: Path | None = None
    measured: int = 0
    calibration: dict[str, Any] | None = None
    _index: dict[str, Site] | None = field(default=None, init=False, repr=False, compare=False)
    _grids: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def parts(self, model: nn.Module) -> dict[str, float]:
        """Predicted milliseconds of each convolution of ``model`` (a sub-net of the table's model: the same
        module names; any widths) at the table's image size."""
        shapes = conv_shapes(model, self.key["imgsz"])
        by_name = self._by_name()
        unknown = sorted(set(shapes) - set(by_name))
        if unknown:
            raise InputError(f"the latency table was measured for another model: it has no layer "
                             f"{unknown[0]}")
        return {name: self._site_ms(by_name[name], s) for name, s in shapes.items()}

    def predict(self, model: nn.Module) -> float:
        """Predicted milliseconds of ``model``: the sum of :meth:`parts`."""
        return float(sum(self.parts(model).values()))

    @property
    def fixed_fraction(self) -> float:
        """The calibrated share of the whole model's latency that does not shrink with the widths (0 when
        not calibrated)."""
        return float(self.calibration["fixed_fraction"]) if self.calibration else 0.0

    @property
    def margin(self) -> float:
        """How much slower than its calibrated prediction the most under-predicted calibration sub-net ran
        (``measured / fitted - 1``; 0 when every one ran at or under its prediction, or without a calibration
        by several sub-nets): the guard a latency budget keeps so that a pick measures within it."""
        errors = (self.calibration or {}).get("errors") or []
        worst = max([0.0] + [1.0 / (1.0 + float(e)) - 1.0 for e in errors])
        return worst if worst > 1e-9 else 0.0  # an exact fit's rounding is no margin

    def calibrate_ratio(self, plain: float) -> float:
        """A plain ratio of sums (a sub-net's convolutions over the original's) as a whole-model ratio:
        ``f + (1 - f) * plain`` with ``f`` = :attr:`fixed_fraction`."""
        f = self.fixed_fraction
        return f + (1.0 - f) * float(plain)

    def ratio(self, model: nn.Module, reference: nn.Module) -> float:
        """A sub-net's latency as a fraction of the original's: ``predict(model) / predict(reference)``,
        calibrated (:meth:`calibrate_ratio`)."""
        return self.calibrate_ratio(self.predict(model) / self.predict(reference))

    def calibrated(self, predicted: float | Sequence[float], measured: float | Sequence[float],
                   **detail: Any) -> LatencyTable:
        """This table with the calibration fitted from sub-nets whose plain predicted ratios are
        ``predicted`` and whose ratios measured whole, beside the original, are ``measured`` (one number
        each, or one per sub-net); written to its cache file (when it has one). ``f`` minimises the squared
        errors of ``f + (1 - f) * p`` against the measured ratios (one sub-net: ``f = (m - p) / (1 - p)``).
        ``detail``: recorded with it (what was measured, how)."""
        p = np.atleast_1d(np.asarray(predicted, dtype=np.float64))
        m = np.atleast_1d(np.asarray(measured, dtype=np.float64))
        if p.shape != m.shape or not np.all((p > 0.0) & (p < 1.0)) or not np.all(m > 0.0):
            raise ValueError(f"calibration needs sub-nets below the original: predicted {p.tolist()}, "
                             f"measured {m.tolist()}")
        low, high = FIXED_FRACTION_RANGE
        fixed = float(np.clip(np.sum((m - p) * (1.0 - p)) / np.sum((1.0 - p) ** 2), low, high))
        fitted = fixed + (1.0 - fixed) * p
        self.calibration = {"fixed_fraction": fixed, "predicted": p.tolist(), "measured": m.tolist(),
                            "errors": (fitted / m - 1.0).tolist(), **detail}
        self.save()
        return self

    def save(self) -> None:
        """Write the table to its cache file, atomically (nothing when it has none)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.to_dict(), self.path)

    def layer_ms(self, name: str, c_in: int, c_out: int) -> float:
        """Predicted milliseconds of the table's convolution ``name`` at widths ``c_in`` x ``c_out`` (a
        depthwise one: ``c_in``), without building the model: what a search that prices strategies by
        their widths calls for each layer."""
        site = self._by_name().get(name)
        if site is None:
            raise InputError(f"the latency table was measured for another model: it has no layer {name}")
        return self._site_ms(site, site.shape.resized(int(c_in), int(c_out)))

    def _by_name(self) -> dict[str, Site]:
        if self._index is None:
            self._index = {s.name: s for s in self.sites}
        return self._index

    def _grid_ms(self, site: Site) -> np.ndarray:
        """The site's milliseconds on its grid: ``[in, out]`` (depthwise: ``[in]``), computed once."""
        if site.name not in self._grids:
            full = site.shape
            if full.groups > 1 and full.groups == full.c_in == full.c_out:  # depthwise: one axis
                grid = np.array([self.ms[full.resized(c, c).key()] for c in site.in_grid])
            else:
                grid = np.array([[self.ms[full.resized(ci, co).key()] for co in site.out_grid]
                                 for ci in site.in_grid])
            self._grids[site.name] = grid
        return self._grids[site.name]

    def _site_ms(self, site: Site, shape: LayerShape) -> float:
        full = site.shape
        if shape.height != full.height or shape.width != full.width or shape.kernel != full.kernel:
            raise InputError(f"layer {site.name} does not match the latency table's (another model or size)")
        if shape.c_in > full.c_in or shape.c_out > full.c_out:
            raise InputError(f"layer {site.name} is wider than the latency table's model ({shape.c_in}x"
                             f"{shape.c_out} > {full.c_in}x{full.c_out}): not a pruned sub-net of it")
        grid = self._grid_ms(site)
        block = int(self.key.get("block", 1))
        c_in, c_out = (effective_width(shape.c_in, block, full.c_in),
                       effective_width(shape.c_out, block, full.c_out))
        if grid.ndim == 1:  # depthwise: one axis
            return float(np.interp(c_in, site.in_grid, grid))
        rows = [np.interp(c_out, site.out_grid, row) for row in grid]
        return float(np.interp(c_in, site.in_grid, rows))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key, "sites": [asdict(s) for s in self.sites], "ms": self.ms,
                "calibration": self.calibration}


def _site_from_dict(d: dict[str, Any]) -> Site:
    s = d["shape"]
    shape = LayerShape(int(s["c_in"]), int(s["c_out"]), tuple(s["kernel"]), tuple(s["stride"]),
                       tuple(s["padding"]), int(s["groups"]), int(s["height"]), int(s["width"]))
    return Site(str(d["name"]), shape, tuple(int(c) for c in d["in_grid"]),
                tuple(int(c) for c in d["out_grid"]))


def table_path(key: dict[str, Any]) -> Path:
    """The cache file of a table key:
    ``cache_dir()/latency-tables/<cpu>-<imgsz>px-<threads>t-<digest>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", str(key["cpu"])).strip("-")[:40] or "cpu"
    return cache_dir() / "latency-tables" / f"{cpu}-{key['imgsz']}px-{key['threads']}t-{digest}.json"


def _read(path: Path, key: dict[str, Any]) -> LatencyTable | None:
    """The cached table at ``path`` when it is readable and was measured for ``key``, else ``None``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT or raw.get("key") != key:
            return None
        sites = [_site_from_dict(d) for d in raw["sites"]]
        ms = {str(k): float(v) for k, v in raw["ms"].items()}
        if not all(s.key() in ms for site in sites for s in _grid_shapes(site)):
            return None
        calibration = raw.get("calibration")
        low, high = FIXED_FRACTION_RANGE
        if calibration is not None and (not low <= float(calibration["fixed_fraction"]) <= high
                                        or not isinstance(calibration.get("measured"), list)):
            calibration = None  # measure it again (a noisy fit, or one sub-net's, from before several)
        return LatencyTable(key, sites, ms, path, 0, calibration)
    except (OSError, ValueError, KeyError, TypeError):  # missing, corrupt or of another format: measure again
        return None


def latency_table(model: nn.Module, imgsz: int = 640, threads: int = 2, grid: Sequence[float] = DEFAULT_GRID,
                  round_to: int = 8, timer: LayerTimer | None = None, cpu: str | None = None,
                  cache: bool = True, block: int | None = None) -> LatencyTable:
    """The latency table of ``model`` at ``imgsz`` on this machine: read from the cache when one was
    measured for the same key, else measured with ``timer`` (default :class:`OrtLayerTimer` with ``threads``)
    and cached.

    Args:
        model: the unpruned model (its full widths are the grid's top).
        imgsz: square image size in pixels.
        threads: ONNX Runtime intra-op threads (part of the key).
        grid: fractions of each layer's full widths to time, each in (0, 1].
        round_to: widths are rounded up to multiples of this (pruning's ``ChannelRules.round_to``).
        block: widths are priced rounded up to multiples of this (default :func:`channel_block`; 1: as
            they are); the grid's widths are multiples of ``lcm(round_to, block)``. Part of the key.
        timer: milliseconds of one layer; a stub in tests.
        cpu: the CPU model of the key (default :func:`~yolocompress.profile.cpu.cpu_name`).
        cache: read and write the cache (``False``: always measure, write nothing).
    """
    if not grid or not all(0.0 < float(f) <= 1.0 for f in grid):
        raise InputError(f"latency grid fractions must be in (0, 1], got {list(grid)}")
    block = channel_block() if block is None else int(block)
    if int(round_to) < 1 or int(threads) < 1 or block < 1:
        raise InputError(f"round_to, threads and block must be >= 1, got {round_to}, {threads} and {block}")
    sites = _sites(conv_shapes(model, imgsz), grid, math.lcm(int(round_to), block))
    digest = hashlib.sha256(json.dumps([asdict(s) for s in sites]).encode()).hexdigest()[:16]
    key = {"cpu": cpu or cpu_name(), "imgsz": int(imgsz), "threads": int(threads),
           "grid": [float(f) for f in grid], "round_to": int(round_to), "block": block, "sites": digest}
    path = table_path(key) if cache else None
    if path is not None:
        cached = _read(path, key)
        if cached is not None:
            return cached
    timer = timer or OrtLayerTimer(threads=int(threads))
    ms: dict[str, float] = {}
    for site in sites:
        for shape in _grid_shapes(site):
            if shape.key() not in ms:
                ms[shape.key()] = float(timer(shape))
    table = LatencyTable(key, sites, ms, path, len(ms))
    table.save()
    return table
