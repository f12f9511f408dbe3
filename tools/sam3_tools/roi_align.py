"""Pure-torch ROI align with torchvision's semantics (aligned=False, sampling_ratio=-1).

transformers' SAM3 geometry encoder calls ``torchvision.ops.roi_align``; torchvision cannot be
installed beside the CPU torch here, and the exported C++ runtime must not need libtorchvision.

Bilinear sampling on a grid is separable: for a box, the pooled value of bin (ph, pw) is
``sum_y sum_x Wy[ph, y] * F[y, x] * Wx[pw, x]`` where Wy (Wx) sums the bilinear weights of the
sample rows (columns) of that bin. With a fixed maximum sampling grid and per-box masks the whole
operation is a pair of dense matmuls with shapes that do not depend on the data, so it traces
into a TorchScript graph that is valid for every box size.
"""

from __future__ import annotations

import math

import torch


def _axis_weights(
    start: torch.Tensor, size: torch.Tensor, pooled: int, length: int, max_grid: int
) -> torch.Tensor:
    """Weights [N, pooled, length] of one axis.

    start, size: [N] box start and extent in feature pixels (size already clamped to >= 1).
    Mirrors torchvision's CPU kernel: grid = ceil(size / pooled) samples per bin, sample i of
    bin p at ``start + p * bin + (i + 0.5) * bin / grid``; samples outside [-1, length] are zero;
    coordinates <= 0 clamp to 0; the last row/column clamps to itself.
    """
    dtype = start.dtype
    bin_size = size / pooled  # [N]
    grid = torch.ceil(size / pooled).clamp(min=1)  # [N], float
    p = torch.arange(pooled, dtype=dtype, device=start.device)  # [P]
    i = torch.arange(max_grid, dtype=dtype, device=start.device)  # [S]
    # coords [N, P, S]
    coords = (
        start[:, None, None]
        + p[None, :, None] * bin_size[:, None, None]
        + (i[None, None, :] + 0.5) * bin_size[:, None, None] / grid[:, None, None]
    )
    used = i[None, None, :] < grid[:, None, None]
    inside = (coords >= -1.0) & (coords <= float(length))
    active = (used & inside).to(dtype)
    c = coords.clamp(min=0.0)
    low = torch.floor(c)
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    c = torch.where(at_end, low, c)
    high = torch.where(at_end, low, low + 1)
    frac = c - low
    positions = torch.arange(length, dtype=dtype, device=start.device)  # [L]
    w_low = (positions[None, None, None, :] == low[..., None]).to(dtype) * (1.0 - frac)[..., None]
    w_high = (positions[None, None, None, :] == high[..., None]).to(dtype) * frac[..., None]
    weights = (w_low + w_high) * active[..., None]  # [N, P, S, L]
    return weights.sum(dim=2)  # [N, P, L]


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Drop-in for ``torchvision.ops.roi_align`` for the arguments SAM3 uses.

    features: [B, C, H, W]; boxes: a list of B tensors [K_b, 4] (x1, y1, x2, y2 in feature pixels
    before spatial_scale) or a [K, 5] tensor with the batch index first. Returns [K, C, Ph, Pw].
    """
    if sampling_ratio != -1 or aligned:
        raise NotImplementedError("only sampling_ratio=-1, aligned=False (SAM3's call) is supported")
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    batch, _, height, width = features.shape
    if isinstance(boxes, (list, tuple)):
        index = torch.cat(
            [torch.full((b.shape[0],), n, dtype=torch.long, device=features.device) for n, b in enumerate(boxes)]
        )
        rois = torch.cat(list(boxes), dim=0)
    else:
        index = boxes[:, 0].long()
        rois = boxes[:, 1:]
    rois = rois.to(features.dtype) * spatial_scale
    x1, y1, x2, y2 = rois.unbind(-1)
    roi_w = (x2 - x1).clamp(min=1.0)
    roi_h = (y2 - y1).clamp(min=1.0)
    # A box can be at most as large as the feature map (normalized boxes), plus slack for boxes
    # that stick out; beyond that the grid is cut, which torchvision would not do. Any box
    # within the image is exact.
    max_grid_h = math.ceil(2 * height / pooled_h) + 1
    max_grid_w = math.ceil(2 * width / pooled_w) + 1
    wy = _axis_weights(y1, roi_h, pooled_h, height, max_grid_h)  # [K, Ph, H]
    wx = _axis_weights(x1, roi_w, pooled_w, width, max_grid_w)  # [K, Pw, W]
    count = (torch.ceil(roi_h / pooled_h).clamp(min=1) * torch.ceil(roi_w / pooled_w).clamp(min=1))
    per_box = features.index_select(0, index)  # [K, C, H, W]
    pooled = torch.einsum("kph,kchw,kqw->kcpq", wy, per_box, wx)
    return pooled / count[:, None, None, None]


def roi_align_batched(features: torch.Tensor, boxes: torch.Tensor, output_size: int) -> torch.Tensor:
    """roi_align for a fixed number of boxes per image: features [B, C, H, W], boxes [B, N, 4]
    (x1, y1, x2, y2 in feature pixels) -> [B * N, C, P, P], in the order torchvision returns for
    ``boxes.unbind(0)``. Unlike a list of per-image tensors, this traces with a dynamic B and N.
    """
    batch, num = boxes.shape[0], boxes.shape[1]
    index = torch.arange(batch, device=features.device)[:, None].expand(batch, num).reshape(-1)
    rois = torch.cat([index[:, None].to(boxes.dtype), boxes.reshape(-1, 4)], dim=1)
    return roi_align(features, rois, output_size)
