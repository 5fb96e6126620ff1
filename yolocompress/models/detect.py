"""The YOLOv5 detection head: per-level 1x1 convs and anchor-based box decoding (v6.x / v7.0 semantics)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn


class Detect(nn.Module):
    """Detection head.

    Args:
        nc: number of classes.
        anchors: per level a flat list ``[w0, h0, w1, h1, ...]`` in pixels.
        ch: input channels of each level.

    ``anchors`` (buffer, Tensor[nl, na, 2]) is held in grid units (pixels / stride) once the model has set
    ``stride``, as Ultralytics stores it. Training forward returns the raw per-level tensors
    ``[B, na, ny, nx, no]``; eval forward returns ``(decoded [B, N, no], raw list)`` with ``cx, cy, w, h`` in
    input pixels followed by sigmoid objectness and class scores.
    """

    def __init__(self, nc: int = 80, anchors: Sequence[Sequence[float]] = (), ch: Sequence[int] = ()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.stride = torch.ones(self.nl)  # set by DetectionModel after a dry run
        self._grid_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _grids(self, i: int, nx: int, ny: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets (grid - 0.5) shaped [1, 1, ny, nx, 2] and anchor sizes in pixels shaped [1, na, 1, 1, 2]:
        they broadcast against ``[B, na, ny, nx, 2]``, so an exported graph stores ``ny * nx * 2`` plus
        ``na * 2`` constants per level instead of two full ``na * ny * nx * 2`` tensors. ``forward`` expands the
        anchor sizes to the full shape (``expand_as``: ``Shape -> Expand`` in ONNX, which ONNX Runtime folds
        into a constant when it loads the model): a broadcast over a last axis of 2 runs as ``ny * nx`` tiny
        loops in ONNX Runtime (0.2 ms of yolov5n at 640, 0.02 ms expanded)."""
        key = (i, nx, ny, device, dtype, self.anchors.data_ptr(), float(self.stride[i]))
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or key not in self._grid_cache:
            yv, xv = torch.meshgrid(torch.arange(ny, device=device, dtype=dtype),
                                    torch.arange(nx, device=device, dtype=dtype), indexing="ij")
            grid = (torch.stack((xv, yv), 2) - 0.5).view(1, 1, ny, nx, 2)
            anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(dtype)
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                return grid, anchor_grid
            self._grid_cache[key] = (grid, anchor_grid)
        return self._grid_cache[key]

    def forward(self, x: list[torch.Tensor]):
        z = []
        x = list(x)
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                grid, anchor_grid = self._grids(i, nx, ny, x[i].device, x[i].dtype)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + grid) * self.stride[i]
                wh = (wh * 2) ** 2 * anchor_grid.expand_as(wh)  # see _grids
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def initialize_biases(self, class_frequency: torch.Tensor | None = None) -> None:
        """YOLOv5's prior: ~8 objects per 640 image per level, class probability ~0.6/(nc-0.99)."""
        for conv, s in zip(self.m, self.stride):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / float(s)) ** 2)
            if class_frequency is None:
                b.data[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))
            else:
                b.data[:, 5:5 + self.nc] += torch.log(class_frequency / class_frequency.sum())
            conv.bias = nn.Parameter(b.view(-1), requires_grad=True)

    def _apply(self, fn, recurse=True):
        # keep ``stride`` (a plain tensor attribute, not a buffer) on the same device/dtype as the model
        super()._apply(fn, recurse)
        self.stride = fn(self.stride)
        self._grid_cache = {}
        return self
