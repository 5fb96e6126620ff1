"""A procedural detection data set of coloured shapes, for tests, demos and compression benchmarks.

Each image has a textured background (gradients, stripes, checks, smooth colour noise, pixel noise),
distractor strokes and open arcs that are not objects, and 0-10 shapes of 8 px up to half the image,
in random colours with shading or texture, partially overlapping (a later shape covers at most ~35% of
an earlier one's box) and sometimes cut by the image border. Labels are the exact extent of the drawn
(anti-aliased, sub-pixel) shape, clipped to the image.

Everything is drawn with numpy using only + - * / and sqrt per pixel (no transcendental functions, no
BLAS), each image from its own generator seeded by ``(seed, split, index)``, so the same seed gives
byte-identical files (on the same numpy/torchvision build: the JPEG encoder is libjpeg-turbo's).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
from torchvision.io import encode_jpeg

from yolocompress.data.images import quiet_torchvision_io
from yolocompress.errors import InputError

SHAPES = ("circle", "rectangle", "triangle", "star", "cross", "ring", "hexagon", "diamond")
DEFAULT_CLASSES = SHAPES[:6]
MIN_SIZE = 8.0  # px, smallest object extent
JPEG_QUALITY = 90
_SPLITS = {"train": 0, "val": 1}


def synthesize_dataset(out_dir: str | os.PathLike, n_train: int = 512, n_val: int = 128, imgsz: int = 256,
                       classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0,
                       overwrite: bool = False) -> Path:
    """Write ``out_dir/{images,labels}/{train,val}/NNNNN.{jpg,txt}`` and ``out_dir/data.yaml``.

    Args:
        out_dir: target folder; built in a temporary sibling folder and renamed into place at the end.
            Must not exist unless ``overwrite`` (an existing empty folder is fine).
        n_train, n_val: number of images per split (>= 1).
        imgsz: square image side in pixels (>= 32).
        classes: shape names from :data:`SHAPES`, in class-id order (default: the first six).
        seed: generator seed (>= 0); the same seed gives byte-identical files.
    Returns:
        the path of the written ``data.yaml``.
    """
    out = Path(out_dir)
    classes = _check_args(out, n_train, n_val, imgsz, classes, seed, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for split, n in (("train", n_train), ("val", n_val)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng([seed, _SPLITS[split], i])
                img, labels = render_image(rng, imgsz, classes)
                with quiet_torchvision_io():
                    jpg = encode_jpeg(torch.from_numpy(img).permute(2, 0, 1).contiguous(), quality=JPEG_QUALITY)
                (tmp / "images" / split / f"{i:05d}.jpg").write_bytes(jpg.numpy().tobytes())
                (tmp / "labels" / split / f"{i:05d}.txt").write_text(_label_text(labels, imgsz))
        meta = {"path": ".", "train": "images/train", "val": "images/val", "nc": len(classes), "names": classes}
        header = (f"# synthetic shapes made by yolocompress: seed {seed}, {n_train} train + {n_val} val images, "
                  f"{imgsz} px\n")
        (tmp / "data.yaml").write_text(header + yaml.safe_dump(meta, sort_keys=False))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "data.yaml"


def _check_args(out: Path, n_train: int, n_val: int, imgsz: int, classes: Sequence[str] | str, seed: int,
                overwrite: bool) -> list[str]:
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    classes = list(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise InputError(f"unknown shape class(es) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    if not classes or len(set(classes)) != len(classes):
        raise InputError(f"classes must be a non-empty list without repeats, got {classes}")
    if n_train < 1 or n_val < 1:
        raise InputError(f"n_train and n_val must be >= 1, got {n_train}, {n_val}")
    if imgsz < 32:
        raise InputError(f"imgsz must be >= 32, got {imgsz}")
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty (--overwrite replaces it)")
    return classes


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an old ``out`` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "d")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _label_text(labels: np.ndarray, imgsz: int) -> str:
    lines = []
    for cls, x1, y1, x2, y2 in labels:
        cx, cy, w, h = (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(line + "\n" for line in lines)


def render_image(rng: np.random.Generator, imgsz: int,
                 classes: Sequence[str] = DEFAULT_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """One image: ``uint8 ndarray[imgsz, imgsz, 3]`` RGB and its boxes ``float ndarray[n, 5]``
    (class id = index into ``classes``, then x1, y1, x2, y2 in pixels)."""
    canvas = _background(rng, imgsz)
    for _ in range(int(rng.integers(0, 6))):
        _stroke(canvas, rng)
    n_obj = 0 if rng.random() < 0.04 else int(np.clip(rng.poisson(3.5), 1, 10))
    boxes: list[list[float]] = []
    for _ in range(n_obj):
        placed = _place_object(canvas, rng, classes, boxes)
        if placed is not None:
            boxes.append(placed)
    for _ in range(int(rng.integers(0, 3))):  # a few strokes across objects too
        _stroke(canvas, rng)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    img = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return img, np.asarray(boxes, dtype=np.float64).reshape(-1, 5)


# ---------------------------------------------------------------- background and clutter

def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """``float32 [s, s, 3]`` in 0..255: one texture, half the time blended with a second."""
    img = _texture(rng, s, int(rng.integers(5)))
    if rng.random() < 0.5:
        a = np.float32(rng.uniform(0.25, 0.6))
        img = img * (1 - a) + _texture(rng, s, int(rng.integers(5))) * a
    return img.astype(np.float32)


def _texture(rng: np.random.Generator, s: int, kind: int) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    ys, xs = _grid(s, s)
    if kind == 0:  # linear gradient
        dx, dy = _unit(rng)
        t = xs * dx + ys * dy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # radial gradient
        cx, cy = rng.uniform(0, s, 2)
        t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / (s * 0.75)
        t = np.minimum(t, 1.0)
    elif kind == 2:  # soft stripes (triangle wave, smoothstepped)
        dx, dy = _unit(rng)
        period = rng.uniform(4, s / 4)
        t = (xs * dx + ys * dy) / period
        t = np.abs((t - np.floor(t)) * 2 - 1)
        t = t * t * (3 - 2 * t)
        c2 = np.clip(c1 + rng.uniform(-90, 90, 3), 0, 255).astype(np.float32)
    elif kind == 3:  # checks
        cell = rng.uniform(6, s / 4)
        t = (np.floor(xs / cell) + np.floor(ys / cell)) % 2
        c2 = np.clip(c1 + rng.uniform(-60, 60, 3), 0, 255).astype(np.float32)
    else:  # smooth colour noise: a coarse random grid, bilinearly upsampled
        g = int(rng.integers(3, 17))
        coarse = rng.uniform(0, 255, (g + 1, g + 1, 3)).astype(np.float32)
        return _upsample(coarse, s)
    t = t.astype(np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


def _upsample(coarse: np.ndarray, s: int) -> np.ndarray:
    g = coarse.shape[0] - 1
    pos = (np.arange(s, dtype=np.float32) + 0.5) * np.float32(g / s)
    i = np.minimum(pos.astype(np.int64), g - 1)
    f = (pos - i).astype(np.float32)
    rows = coarse[i] * (1 - f)[:, None, None] + coarse[i + 1] * f[:, None, None]  # [s, g+1, 3]
    return rows[:, i] * (1 - f)[None, :, None] + rows[:, i + 1] * f[None, :, None]


def _stroke(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A distractor: a straight line, a polyline, or an open arc (at most 240 degrees, so never a ring)."""
    s = canvas.shape[0]
    width = rng.uniform(1, 3)
    color = rng.uniform(0, 255, 3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        pts = rng.uniform(-0.1 * s, 1.1 * s, (2, 2))
    elif kind == 1:
        start = rng.uniform(0, s, 2)
        pts = start + np.cumsum(rng.uniform(-0.25 * s, 0.25 * s, (int(rng.integers(3, 6)), 2)), 0)
    else:
        c, r = rng.uniform(0, s, 2), rng.uniform(8, s / 3)
        a0, span = rng.uniform(0, 2 * math.pi), rng.uniform(math.pi / 3, 4 * math.pi / 3)
        angles = [a0 + span * k / 8 for k in range(9)]
        pts = np.array([[c[0] + r * math.cos(a), c[1] + r * math.sin(a)] for a in angles])
    for p, q in zip(pts[:-1], pts[1:]):
        _draw_segment(canvas, p, q, width, color)


def _draw_segment(canvas: np.ndarray, p: np.ndarray, q: np.ndarray, width: float, color: np.ndarray) -> None:
    s = canvas.shape[0]
    pad = width / 2 + 1
    x0, x1 = int(max(0, math.floor(min(p[0], q[0]) - pad))), int(min(s, math.ceil(max(p[0], q[0]) + pad)))
    y0, y1 = int(max(0, math.floor(min(p[1], q[1]) - pad))), int(min(s, math.ceil(max(p[1], q[1]) + pad)))
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = _grid(y1 - y0, x1 - x0, x0, y0)
    ex, ey = q[0] - p[0], q[1] - p[1]
    wx, wy = xs - p[0], ys - p[1]
    t = np.clip((wx * ex + wy * ey) / max(ex * ex + ey * ey, 1e-9), 0, 1)
    d = np.sqrt((wx - ex * t) ** 2 + (wy - ey * t) ** 2) - width / 2
    _composite(canvas, (x0, y0), _coverage(d), color)


# ---------------------------------------------------------------- objects

def _place_object(canvas: np.ndarray, rng: np.random.Generator, classes: Sequence[str],
                  boxes: list[list[float]]) -> list[float] | None:
    """Draw one random shape where it overlaps earlier ones only a little; return its label or None."""
    s = canvas.shape[0]
    cls = int(rng.integers(len(classes)))
    kind = classes[cls]
    size = float(np.exp(rng.uniform(math.log(MIN_SIZE), math.log(s / 2))))
    geometry = _shape(kind, size, rng)
    ext = _extent(geometry)
    for _ in range(20):
        cx, cy = rng.uniform(0, s, 2)
        x1, y1, x2, y2 = cx + ext[0], cy + ext[1], cx + ext[2], cy + ext[3]
        cut = (min(x2, s) - max(x1, 0)) * (min(y2, s) - max(y1, 0)) / ((x2 - x1) * (y2 - y1))
        if cut < 0.7:  # at most 30% of the object outside the image
            continue
        box = [max(x1, 0.0), max(y1, 0.0), min(x2, float(s)), min(y2, float(s))]
        if all(_covers(box, b[1:]) <= 0.35 for b in boxes):
            break
    else:
        return None
    _draw_shape(canvas, geometry, (cx, cy), rng)
    return [cls, *box]


def _covers(new: list[float], old: Sequence[float]) -> float:
    """Fraction of box ``old`` covered by box ``new`` (both x1y1x2y2)."""
    iw = min(new[2], old[2]) - max(new[0], old[0])
    ih = min(new[3], old[3]) - max(new[1], old[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / max((old[2] - old[0]) * (old[3] - old[1]), 1e-9)


def _shape(kind: str, size: float, rng: np.random.Generator) -> tuple:
    """Geometry whose box is centred on the origin with its longer side ``size`` pixels:
    ``("disc", r)``, ``("ring", r_out, r_in)`` or ``("poly", vertices ndarray[n, 2])``."""
    r = size / 2
    if kind == "circle":
        return ("disc", r)
    if kind == "ring":
        return ("ring", r, min(r * rng.uniform(0.45, 0.7), r - 1.5))
    if kind == "rectangle":
        a = rng.uniform(1.0, 2.5)
        w, h = (r, r / a) if rng.random() < 0.5 else (r / a, r)
        pts, rot = [(-w, -h), (w, -h), (w, h), (-w, h)], rng.uniform(-20, 20)
    elif kind == "triangle":
        base = rng.uniform(0, 360)
        angles = [base + k * 120 + rng.uniform(-12, 12) for k in range(3)]
        pts, rot = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in angles], 0.0
    elif kind == "star":
        inner = r * rng.uniform(0.38, 0.5)
        pts = [_polar(r if k % 2 == 0 else inner, k * 36) for k in range(10)]
        rot = rng.uniform(0, 72)
    elif kind == "cross":
        t = r * rng.uniform(0.25, 0.4)
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
        rot = rng.uniform(0, 90)
    elif kind == "hexagon":
        pts, rot = [_polar(r, k * 60) for k in range(6)], rng.uniform(0, 60)
    elif kind == "diamond":
        w = r / rng.uniform(1.25, 1.8)
        pts, rot = [(0, -r), (w, 0), (0, r), (-w, 0)], rng.uniform(-15, 15)
    else:  # pragma: no cover - guarded by _check_args
        raise ValueError(kind)
    c, s_ = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    v = np.array([(x * c - y * s_, x * s_ + y * c) for x, y in pts])
    v -= (v.min(0) + v.max(0)) / 2  # centre the box on the origin
    return ("poly", v * (size / (v.max(0) - v.min(0)).max()))  # the longer box side is ``size``


def _polar(r: float, deg: float) -> tuple[float, float]:
    return r * math.cos(math.radians(deg - 90)), r * math.sin(math.radians(deg - 90))


def _extent(geometry: tuple) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 of the shape relative to its centre (exact, so labels are tight)."""
    if geometry[0] in ("disc", "ring"):
        r = geometry[1]
        return -r, -r, r, r
    v = geometry[1]
    return float(v[:, 0].min()), float(v[:, 1].min()), float(v[:, 0].max()), float(v[:, 1].max())


def _draw_shape(canvas: np.ndarray, geometry: tuple, center: tuple[float, float], rng: np.random.Generator) -> None:
    s = canvas.shape[0]
    cx, cy = center
    e = _extent(geometry)
    x0, y0 = max(0, int(math.floor(cx + e[0])) - 1), max(0, int(math.floor(cy + e[1])) - 1)
    x1, y1 = min(s, int(math.ceil(cx + e[2])) + 1), min(s, int(math.ceil(cy + e[3])) + 1)
    ys, xs = _grid(y1 - y0, x1 - x0, x0, y0)
    d = _sdf(geometry, xs - cx, ys - cy)
    fill = _object_colour(canvas[y0:y1, x0:x1], rng)
    colour = _paint(fill, xs, ys, rng)
    if rng.random() < 0.3:  # an outline in another colour
        edge = np.clip(fill + rng.choice([-1, 1]) * rng.uniform(60, 140), 0, 255).astype(np.float32)
        _composite(canvas, (x0, y0), _coverage(d), edge)
        _composite(canvas, (x0, y0), _coverage(d + rng.uniform(1, 2.5)), colour)
    else:
        _composite(canvas, (x0, y0), _coverage(d), colour)


def _object_colour(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour at least 60 RGB units away from the mean background under the object."""
    mean = background.reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(10):
        c = rng.uniform(0, 255, 3)
        d = float(np.sqrt(((c - mean) ** 2).sum()))
        if d > best_d:
            best, best_d = c, d
        if d >= 60:
            break
    return best.astype(np.float32)


def _paint(fill: np.ndarray, xs: np.ndarray, ys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel object colour: flat, shaded by a linear ramp, or striped with a second colour."""
    mode = rng.random()
    if mode < 0.45:
        return fill
    dx, dy = _unit(rng)
    t = xs * dx + ys * dy
    if mode < 0.8:
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6) * 2 - 1
        gain = np.float32(rng.uniform(0.1, 0.3))
        return np.clip(fill * (1 + gain * t[..., None]), 0, 255).astype(np.float32)
    period = rng.uniform(3, 10)
    t = t / period
    t = np.abs((t - np.floor(t)) * 2 - 1)[..., None].astype(np.float32)
    other = np.clip(fill + rng.uniform(-70, 70, 3), 0, 255).astype(np.float32)
    return fill * (1 - t) + other * t


def _sdf(geometry: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) from pixel centres ``x, y`` relative to the centre."""
    if geometry[0] == "disc":
        return np.sqrt(x * x + y * y) - geometry[1]
    if geometry[0] == "ring":
        r_out, r_in = geometry[1], geometry[2]
        return np.abs(np.sqrt(x * x + y * y) - (r_out + r_in) / 2) - (r_out - r_in) / 2
    v = geometry[1]
    d = (x - v[0, 0]) ** 2 + (y - v[0, 1]) ** 2
    inside = np.zeros(x.shape, dtype=bool)
    for i in range(len(v)):
        (ax, ay), (bx, by) = v[i], v[i - 1]
        ex, ey, wx, wy = bx - ax, by - ay, x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
        d = np.minimum(d, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        c1, c2, c3 = y >= ay, y < by, ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d)


def _coverage(d: np.ndarray) -> np.ndarray:
    """Anti-aliased pixel coverage from a signed distance: 1 inside, 0 outside, a 1-px ramp across the edge."""
    return np.clip(0.5 - d, 0, 1).astype(np.float32)


def _composite(canvas: np.ndarray, origin: tuple[int, int], alpha: np.ndarray, colour: np.ndarray) -> None:
    x0, y0 = origin
    h, w = alpha.shape
    region = canvas[y0:y0 + h, x0:x0 + w]
    a = alpha[..., None]
    region *= 1 - a
    region += colour * a


def _grid(h: int, w: int, x0: int = 0, y0: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(ys, xs)``, each ``[h, w]``, of the block at ``(x0, y0)``."""
    ys = (np.arange(h, dtype=np.float32) + np.float32(y0 + 0.5))[:, None] * np.ones((1, w), np.float32)
    xs = (np.arange(w, dtype=np.float32) + np.float32(x0 + 0.5))[None, :] * np.ones((h, 1), np.float32)
    return ys, xs


def _unit(rng: np.random.Generator) -> tuple[float, float]:
    a = rng.uniform(0, 2 * math.pi)
    return math.cos(a), math.sin(a)
