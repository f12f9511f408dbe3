"""The official SAM3 mask post-processing in pure Python (numpy): twins of native/core/mask_postprocess.*.

facebookresearch/sam3 post-processes video detections and tracks with connected components
(sam3/perflib/connected_components.py: skimage.measure.label, 8-connectivity in 2-D), hole
filling and sprinkle removal (sam3/model/sam3_tracker_utils.py fill_holes_in_mask_scores) and
mask NMS (sam3/perflib/nms.py nms_masks + generic_nms_cpu). transformers' Sam3VideoModel has the
same code but skips all three unless the optional `kernels` package loads its `cv-utils` kernel.
The functions here compute the same results without skimage or torch (the connected components
are labelled here, by runs and union-find), and `TwinKernels` stands in for that kernel:

    import transformers.models.sam3_video.modeling_sam3_video as sam3_video
    sam3_video.cv_utils_kernel = TwinKernels()

The module global `cv_utils_kernel` is itself the "loading attempted" flag
(`_load_cv_utils_kernel_once` returns at once when it is not None), so once it holds the twin
transformers never tries to load the real package; setting it back to None restores the default
(try `kernels`, else skip the three steps).

Choices where the official code is unspecified or differs: equal NMS scores are taken lower index
first (the official generic_nms_cpu uses numpy's unstable argsort reversed, which in practice
takes the higher index first); no padding of odd sizes (the official pads the bottom and right
with zeros for cc_torch, which with 8-connectivity changes no component). Thresholds are compared
in float32, as torch and numpy compare a float32 array with a Python float.
"""

from __future__ import annotations

import numpy as np

FILL_VALUE = np.float32(0.1)
SPRINKLE_VALUE = np.float32(-0.1)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a 2-D mask (nonzero = foreground).

    Returns (labels, areas), both int32 [H, W]: labels 1..K numbered in raster order of each
    component's first pixel (as skimage.measure.label), 0 on background; areas the pixel count of
    each pixel's component, 0 on background.

    Horizontal runs of each row are the nodes; a run joins every run of the next row whose
    columns come within one column of its own (8-connectivity), found by binary search.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"label_components takes a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    labels = np.zeros((height, width), np.int32)
    areas = np.zeros((height, width), np.int32)
    if mask.size == 0 or not mask.any():
        return labels, areas
    # A zero column on both sides keeps runs inside their row; positions are in the padded flat
    # image, so run starts (and ends) increase in raster order.
    stride = width + 2
    padded = np.zeros((height, stride), np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded.ravel(), prepend=0)
    starts = np.flatnonzero(change == 1)  # first pixel of each run
    ends = np.flatnonzero(change == -1)  # one past its last pixel
    rows = starts // stride
    # Run j of row r + 1 touches run i of row r when start_j <= end_i and end_j >= start_i
    # (columns, end exclusive). Those j form a contiguous range [low, high).
    below_start = (rows + 1) * stride + (starts - rows * stride)
    below_end = (rows + 1) * stride + (ends - rows * stride)
    low = np.searchsorted(ends, below_start, side="left")
    high = np.searchsorted(starts, below_end, side="right")
    parent = list(range(len(starts)))
    for i, (lo, hi) in enumerate(zip(low.tolist(), high.tolist())):
        for j in range(lo, hi):
            root_i, root_j = _find(parent, i), _find(parent, j)
            if root_i != root_j:
                parent[max(root_i, root_j)] = min(root_i, root_j)
    roots = np.array([_find(parent, i) for i in range(len(starts))], np.int64)
    # The root of each component is its first run (unions keep the smaller index), so numbering
    # the distinct roots in order numbers components by their first pixel.
    unique_roots, run_component = np.unique(roots, return_inverse=True)
    lengths = ends - starts
    component_area = np.bincount(run_component, weights=lengths, minlength=len(unique_roots))
    flat_labels = np.zeros(height * stride, np.int32)
    flat_areas = np.zeros(height * stride, np.int32)
    run_of_pixel = np.repeat(np.arange(len(starts)), lengths)
    pixels = np.repeat(starts - np.cumsum(np.concatenate(([0], lengths[:-1]))), lengths)
    pixels += np.arange(len(pixels))
    flat_labels[pixels] = run_component[run_of_pixel] + 1
    flat_areas[pixels] = component_area.astype(np.int64)[run_component[run_of_pixel]]
    labels[:] = flat_labels.reshape(height, stride)[:, 1:-1]
    areas[:] = flat_areas.reshape(height, stride)[:, 1:-1]
    return labels, areas


def component_areas(mask: np.ndarray) -> np.ndarray:
    """Component size (8-connectivity) at each foreground (nonzero) pixel, 0 elsewhere; int32."""
    return label_components(mask)[1]


def fill_holes_in_mask_scores(
    logits: np.ndarray, max_area: int, fill_holes: bool = True, remove_sprinkles: bool = True
) -> np.ndarray:
    """fill_holes_in_mask_scores on mask logits [..., H, W] (float32); returns a new array.

    fill_holes: background (<= 0) components of area <= max_area become 0.1. remove_sprinkles
    (then): foreground (> 0) components of area <= min(foreground pixels // 2, max_area) become
    -0.1, per H x W mask.
    """
    out = np.array(logits, dtype=np.float32, copy=True)
    if max_area <= 0:
        return out
    for mask in out.reshape(-1, *out.shape[-2:]):
        if fill_holes:
            background = mask <= 0
            mask[background & (component_areas(background) <= max_area)] = FILL_VALUE
        if remove_sprinkles:
            foreground = mask > 0
            threshold = min(int(foreground.sum()) // 2, max_area)
            mask[foreground & (component_areas(foreground) <= threshold)] = SPRINKLE_VALUE
    return out


def _pack_bits(masks: np.ndarray) -> np.ndarray:
    """[n, P] bool -> [n, ceil(P / 64)] uint64, 64 pixels a word (zero bits after the last)."""
    packed = np.packbits(masks, axis=1)
    return np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8))).view(np.uint64)


def pair_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary masks of one shape; two empty masks are identical (1)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of binary masks a [n, H, W] and b [m, H, W]: [n, m] float32, intersection / max(union, 1)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    a = a.reshape(len(a), int(np.prod(a.shape[1:])))
    b = b.reshape(len(b), int(np.prod(b.shape[1:])))
    packed_a, packed_b = _pack_bits(a), _pack_bits(b)
    intersection = np.zeros((len(a), len(b)), np.int64)
    for i, row in enumerate(packed_a):
        intersection[i] = np.bitwise_count(row & packed_b).sum(1, dtype=np.int64)
    union = a.sum(1, dtype=np.int64)[:, None] + b.sum(1, dtype=np.int64)[None, :] - intersection
    return intersection.astype(np.float32) / np.maximum(union, 1).astype(np.float32)


def greedy_nms(ious: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """generic_nms on an IoU matrix: indices kept, in the order kept (best score first; equal
    scores lower index first). Each kept one drops the remaining ones with IoU > iou_threshold."""
    ious = np.asarray(ious, np.float32)
    scores = np.asarray(scores, np.float32)
    threshold = np.float32(iou_threshold)
    remaining = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    while remaining:
        best = remaining[0]
        kept.append(best)
        remaining = [j for j in remaining[1:] if ious[best, j] <= threshold]
    return kept


def nms_masks(
    probs: np.ndarray, masks: np.ndarray, prob_threshold: float, iou_threshold: float
) -> np.ndarray:
    """nms_masks: probs [n] float32, masks [n, H, W] logits -> keep [n] bool.

    Valid: probs > prob_threshold (others never kept); greedy NMS over the valid ones on the IoU
    of their binarized (> 0) masks.
    """
    probs = np.asarray(probs, np.float32)
    keep = np.zeros(len(probs), bool)
    valid = np.flatnonzero(probs > np.float32(prob_threshold))
    if valid.size == 0:
        return keep
    binary = np.asarray(masks)[valid] > 0
    kept = greedy_nms(mask_iou(binary, binary), probs[valid], iou_threshold)
    keep[valid[kept]] = True
    return keep


class TwinKernels:
    """The twins behind the interface of the `kernels-community/cv-utils` kernel, as
    transformers' modeling_sam3_video.py calls it (see the module docstring for the recipe)."""

    def generic_nms(self, ious, scores, iou_threshold: float, use_iou_matrix: bool = True):
        """ious [k, k], scores [k] (torch) -> int64 tensor of the kept indices, in the order kept."""
        import torch

        if not use_iou_matrix:
            raise NotImplementedError("TwinKernels.generic_nms takes an IoU matrix only")
        kept = greedy_nms(
            ious.detach().float().cpu().numpy(), scores.detach().float().cpu().numpy(), iou_threshold
        )
        return torch.tensor(kept, dtype=torch.int64, device=scores.device)

    def cc_2d(self, mask, get_counts: bool = True):
        """mask uint8 [..., H, W] (torch) -> (labels, counts), int32 of the same shape: labels
        1..K per image (0 on background), counts the component sizes (0 on background)."""
        import torch

        images = mask.detach().cpu().numpy()
        flat = images.reshape(-1, *images.shape[-2:])
        labels = np.zeros(flat.shape, np.int32)
        counts = np.zeros(flat.shape, np.int32)
        for k, image in enumerate(flat):
            labels[k], counts[k] = label_components(image)
        labels_t = torch.from_numpy(labels.reshape(images.shape)).to(mask.device)
        counts_t = torch.from_numpy(counts.reshape(images.shape)).to(mask.device)
        return (labels_t, counts_t) if get_counts else labels_t
