"""The official SAM3 mask post-processing: the pure-Python twins (sam3_tools/mask_postprocess.py)
against the official algorithms, and the C++ (native/core/mask_postprocess.*, through
`sam3_core_cli postprocess`) against the twins, exactly.

References: skimage.measure.label (default connectivity: 8 in 2-D) with the counts of the official
CPU fallback (sam3/perflib/connected_components.py connected_components_cpu); transformers' own
fill_holes_in_mask_scores and nms_masks with that fallback and the official generic_nms_cpu
(sam3/perflib/nms.py) plugged in as its `cv_utils_kernel`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers.models.sam3_video.modeling_sam3_video as sam3_video
from skimage.measure import label

from sam3_tools.mask_postprocess import (
    TwinKernels,
    component_areas,
    fill_holes_in_mask_scores,
    greedy_nms,
    label_components,
    mask_iou,
    nms_masks,
)

CLI = Path(__file__).resolve().parents[2] / "build" / "Release" / "sam3_core_cli"
MAX_AREA = 16  # Sam3VideoConfig.fill_hole_area


# --- references ------------------------------------------------------------------------------


def skimage_areas(mask: np.ndarray) -> np.ndarray:
    """Component sizes from skimage's labels (connected_components_cpu_single's counts, by bincount)."""
    labels = label(np.asarray(mask))
    counts = np.bincount(labels.ravel(), minlength=1)
    counts[0] = 0
    return counts[labels]


def generic_nms_cpu(ious: torch.Tensor, scores: torch.Tensor, iou_threshold=0.5) -> torch.Tensor:
    """sam3/perflib/nms.py generic_nms_cpu, as the official file has it."""
    ious_np = ious.float().detach().cpu().numpy()
    scores_np = scores.float().detach().cpu().numpy()
    order = scores_np.argsort()[::-1]
    kept_inds = []
    while order.size > 0:
        i = order.item(0)
        kept_inds.append(i)
        inds = np.where(ious_np[i, order[1:]] <= iou_threshold)[0]
        order = order[inds + 1]
    return torch.tensor(kept_inds, dtype=torch.int64, device=scores.device)


class OfficialCpuKernels:
    """The official CPU fallbacks behind the interface transformers calls (cv-utils)."""

    def generic_nms(self, ious, scores, iou_threshold, use_iou_matrix=True):
        return generic_nms_cpu(ious, scores, iou_threshold)

    def cc_2d(self, mask, get_counts=True):
        # connected_components_cpu: [B, 1, H, W] -> per image skimage label and counts.
        images = mask.squeeze(1)
        labels, counts = [], []
        for image in images:
            lab, num = label(image.cpu().numpy(), return_num=True)
            lab = torch.from_numpy(lab)
            count = torch.zeros_like(lab)
            for i in range(1, num + 1):
                count[lab == i] = (lab == i).sum()
            labels.append(lab)
            counts.append(count)
        return torch.stack(labels).view(mask.shape), torch.stack(counts).view(mask.shape)


@pytest.fixture
def official(monkeypatch):
    monkeypatch.setattr(sam3_video, "cv_utils_kernel", OfficialCpuKernels())


def official_fill_holes(logits: np.ndarray, max_area: int, **flags) -> np.ndarray:
    out = sam3_video.fill_holes_in_mask_scores(torch.from_numpy(logits)[None, None], max_area, **flags)
    return out[0, 0].numpy()


def official_nms(probs, masks, prob_threshold, iou_threshold) -> np.ndarray:
    return sam3_video.nms_masks(
        torch.from_numpy(np.asarray(probs, np.float32)), torch.from_numpy(masks), prob_threshold, iou_threshold
    ).numpy()


def cli(requests: list[dict]) -> list[dict]:
    """One `sam3_core_cli postprocess` run answering a list of requests."""
    assert CLI.exists(), f"{CLI} is missing: run `npm run build:native` first"
    done = subprocess.run(
        [str(CLI), "postprocess"], input=json.dumps(requests), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert len(answers) == len(requests)
    return answers


def flat(array: np.ndarray) -> list:
    return np.asarray(array).ravel().tolist()


# --- hand-made masks -------------------------------------------------------------------------


def hand_made_masks() -> dict[str, np.ndarray]:
    masks = {}
    diagonal = np.eye(9, dtype=bool)  # one component only through corners
    masks["diagonal"] = diagonal
    masks["anti_diagonal_pieces"] = diagonal[::-1] | np.eye(9, k=4, dtype=bool)
    checker = (np.indices((11, 13)).sum(0) % 2) == 0  # all one component with 8-connectivity
    masks["checkerboard"] = checker
    masks["checkerboard_inverse"] = ~checker
    ring = np.zeros((15, 17), bool)
    ring[2:12, 3:14] = True
    ring[4:10, 5:12] = False
    ring[7, 8] = True  # an island inside the ring's hole
    masks["ring"] = ring
    ys, xs = np.indices((17, 17))
    masks["diamond_outline"] = np.abs(ys - 8) + np.abs(xs - 8) == 6  # inside touches outside diagonally
    masks["odd_17x23"] = np.random.default_rng(1).random((17, 23)) < 0.45
    masks["empty"] = np.zeros((6, 5), bool)
    masks["full"] = np.ones((7, 4), bool)
    masks["single_pixel"] = np.ones((1, 1), bool)
    masks["row"] = np.array([[1, 1, 0, 1, 0, 0, 1, 1, 1]], bool)
    masks["column"] = np.array([[1], [0], [1], [1], [0]], bool)
    masks["border_touching"] = np.pad(np.ones((3, 3), bool), ((0, 2), (4, 0)))
    return masks


def blob(height=33, width=35) -> np.ndarray:
    """Smooth positive logits on a big rectangle, negative outside: distinct float32 values."""
    ys, xs = np.indices((height, width)).astype(np.float32)
    logits = (1.5 + 0.01 * ys - 0.02 * xs).astype(np.float32)
    outside = np.ones((height, width), bool)
    outside[4:28, 5:30] = False
    logits[outside] = -(1.0 + 0.003 * (ys + xs))[outside]
    return logits


def fill_holes_cases() -> dict[str, tuple[np.ndarray, dict]]:
    """name -> (logits, expectations); most sizes are odd (the official pads those)."""
    cases = {}
    holes = blob()
    holes[10, 10] = -0.5  # a one-pixel hole
    holes[14:16, 20:22] = -0.25  # a 2 x 2 hole
    holes[20, 8:12] = 0.0  # logit 0 is background: a 4-pixel hole
    cases["small_holes"] = (holes, {"filled": 1 + 4 + 4})
    big = blob()
    big[8:13, 12:17] = -2.0  # 25 pixels > MAX_AREA: stays
    big[20, 20] = -2.0  # a small one next to it is filled
    cases["big_hole"] = (big, {"filled": 1, "kept_hole": (slice(8, 13), slice(12, 17))})
    sprinkles = blob()
    sprinkles[1, 1] = sprinkles[30, 2] = sprinkles[31, 33] = 0.7
    sprinkles[0:2, 32:34] = 0.3  # 4 pixels
    sprinkles[30:32, 10:13] = 0.2  # 6 pixels
    cases["sprinkles"] = (sprinkles, {"removed": 3 + 4 + 6})
    tiny = np.full((20, 21), -3.0, np.float32)
    tiny[9:11, 9] = 2.0  # a 2-pixel object alone: threshold min(2 // 2, 16) = 1 keeps it
    tiny[3, 3] = 2.0  # with a 1-pixel sprinkle: 3 pixels in all, threshold 1 removes only that
    cases["tiny_object"] = (tiny, {"removed": 1, "kept_object": (slice(9, 11), 9)})
    diagonal = blob()
    diagonal[28:30, 30:32] = 0.9  # 2 x 2 touching the blob's corner (27, 29) diagonally: one component
    diagonal[2, 3] = 0.9  # two rows above the blob's corner (4, 5): a sprinkle, removed
    diagonal[6:9, 6:9] = -0.8  # two 3 x 3 holes touching at a corner: one 18-pixel hole, kept
    diagonal[9:12, 9:12] = -0.6
    diagonal[20, 20] = diagonal[21, 21] = -0.4  # a diagonal 2-pixel hole: filled
    cases["diagonal_touching"] = (
        diagonal,
        {"removed": 1, "filled": 2, "kept_object": (slice(28, 30), slice(30, 32)),
         "kept_hole": (slice(6, 12), slice(6, 12))},
    )
    ys, xs = np.indices((19, 19))
    outline = np.where(np.abs(ys - 9) + np.abs(xs - 9) == 6, 1.0, -1.0).astype(np.float32)
    cases["diamond_outline"] = (outline, {"filled": 0, "removed": 0})  # its inside is not a hole
    return cases


# --- connected components --------------------------------------------------------------------


def test_component_areas_equal_skimage():
    masks = list(hand_made_masks().values())
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width = rng.integers(1, 40, size=2)
        masks.append(rng.random((height, width)) < rng.random())
    masks.append(rng.random((288, 288)) < 0.5)
    for mask in masks:
        labels, areas = label_components(mask)
        assert areas.dtype == np.int32
        assert np.array_equal(areas, skimage_areas(mask))
        assert np.array_equal(labels, label(mask))  # even the numbering is skimage's
        assert np.array_equal(component_areas(mask), areas)
    # 8-connectivity, not 4: the diagonal is one component, the checkerboard too.
    made = hand_made_masks()
    assert component_areas(made["diagonal"]).max() == 9
    assert component_areas(made["checkerboard"]).max() == made["checkerboard"].sum()


def test_twin_kernels_cc_2d_shape_and_dtype():
    masks = np.stack([hand_made_masks()["ring"], np.zeros((15, 17), bool)])
    labels, counts = TwinKernels().cc_2d(torch.from_numpy(masks).to(torch.uint8)[:, None], get_counts=True)
    assert labels.shape == counts.shape == (2, 1, 15, 17)
    assert labels.dtype == counts.dtype == torch.int32
    assert np.array_equal(counts[0, 0].numpy(), skimage_areas(masks[0]))
    assert counts[1].sum() == 0 and labels[1].sum() == 0


# --- fill holes and remove sprinkles ---------------------------------------------------------


def test_fill_holes_equal_official(official):
    for name, (logits, expect) in fill_holes_cases().items():
        twin = fill_holes_in_mask_scores(logits, MAX_AREA)
        assert twin.dtype == np.float32
        assert np.array_equal(twin, official_fill_holes(logits, MAX_AREA)), name
        filled = int(((logits <= 0) & (twin > 0)).sum())
        removed = int(((logits > 0) & (twin <= 0)).sum())
        assert filled == expect.get("filled", 0), name
        assert removed == expect.get("removed", 0), name
        assert np.all(twin[(logits <= 0) & (twin > 0)] == np.float32(0.1))
        assert np.all(twin[(logits > 0) & (twin <= 0)] == np.float32(-0.1))
        if "kept_hole" in expect:
            assert np.all(twin[expect["kept_hole"]] == logits[expect["kept_hole"]]), name
        if "kept_object" in expect:
            assert np.all(twin[expect["kept_object"]] > 0), name
        for flags in ({"fill_holes": False}, {"remove_sprinkles": False}):
            want = official_fill_holes(logits, MAX_AREA, **flags)
            assert np.array_equal(fill_holes_in_mask_scores(logits, MAX_AREA, **flags), want), (name, flags)
        # Cropped to the other parity (the official pads odd sizes to even ones, the twin not).
        even = logits[: logits.shape[0] // 2 * 2, : logits.shape[1] // 2 * 2]
        other = np.ascontiguousarray(even if even.shape != logits.shape else logits[:-1])
        want = official_fill_holes(other, MAX_AREA)
        assert np.array_equal(fill_holes_in_mask_scores(other, MAX_AREA), want), name
        for max_area in (0, -1):
            assert np.array_equal(fill_holes_in_mask_scores(logits, max_area), logits)


def test_twin_kernels_plug_into_transformers(monkeypatch):
    """The module docstring's recipe: the twin replaces the kernel, and transformers' loader
    leaves it in place; its results equal the official CPU fallbacks'."""
    monkeypatch.setattr(sam3_video, "cv_utils_kernel", TwinKernels())
    sam3_video._load_cv_utils_kernel_once()
    assert isinstance(sam3_video.cv_utils_kernel, TwinKernels)
    cases = fill_holes_cases()
    batch = np.stack([cases[name][0] for name in ("small_holes", "big_hole", "sprinkles", "diagonal_touching")])
    with_twin = sam3_video.fill_holes_in_mask_scores(torch.from_numpy(batch)[:, None], MAX_AREA)
    probs, masks = overlapping_detections()
    nms_twin = official_nms(probs, masks, 0.5, 0.1)
    monkeypatch.setattr(sam3_video, "cv_utils_kernel", OfficialCpuKernels())
    with_official = sam3_video.fill_holes_in_mask_scores(torch.from_numpy(batch)[:, None], MAX_AREA)
    assert torch.equal(with_twin, with_official)
    assert not torch.equal(with_twin, torch.from_numpy(batch)[:, None])
    assert np.array_equal(nms_twin, official_nms(probs, masks, 0.5, 0.1))


# --- mask IoU and NMS ------------------------------------------------------------------------


def rectangle_logits(height, width, boxes, rng) -> np.ndarray:
    """One mask per (y0, x0, y1, x1): positive logits inside, negative outside."""
    masks = -rng.random((len(boxes), height, width), np.float32) - 0.01
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        inside = masks[k, y0:y1, x0:x1]  # clipped to the mask
        inside[:] = rng.random(inside.shape, np.float32) + 0.01
    return masks


def overlapping_detections():
    rng = np.random.default_rng(7)
    boxes = [
        (2, 2, 20, 20),  # 0: best
        (3, 3, 21, 21),  # 1: IoU ~0.8 with 0: suppressed
        (30, 30, 40, 40),  # 2: alone
        (2, 12, 20, 30),  # 3: IoU ~0.29 with 0 and 1: suppressed at 0.1
        (31, 31, 39, 39),  # 4: inside 2, suppressed
        (0, 0, 4, 4),  # 5: below the score threshold
        (20, 0, 30, 8),  # 6: touches nothing
    ]
    probs = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.55], np.float32)
    return probs, rectangle_logits(44, 41, boxes, rng)


def test_mask_iou_equals_transformers():
    rng = np.random.default_rng(3)
    a = rng.random((6, 17, 23)) < 0.4
    b = rng.random((4, 17, 23)) < 0.6
    a[0] = False
    b[1] = False  # empty against empty: 0 / max(0, 1)
    want = sam3_video.mask_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    got = mask_iou(a, b)
    assert got.dtype == np.float32 and got.shape == (6, 4)
    assert np.array_equal(got, want)
    assert got[0, 1] == 0 and 0 < got.max() < 1


def test_nms_equals_official(official):
    probs, masks = overlapping_detections()
    for iou_threshold in (0.1, 0.5, 0.9):
        keep = nms_masks(probs, masks, 0.5, iou_threshold)
        assert np.array_equal(keep, official_nms(probs, masks, 0.5, iou_threshold)), iou_threshold
    keep = nms_masks(probs, masks, 0.5, 0.1)
    assert keep.tolist() == [True, False, True, False, False, False, True]
    assert nms_masks(probs, masks, 0.5, 0.5).tolist() == [True, False, True, True, False, False, True]
    # Random cases without ties in score, against the reference loop directly and through nms_masks.
    rng = np.random.default_rng(11)
    suppressed = 0
    for trial in range(30):
        n = int(rng.integers(1, 25))
        corners = rng.integers(0, 30, size=(n, 2))
        sizes = rng.integers(1, 16, size=(n, 2))
        boxes = [(y, x, y + h, x + w) for (y, x), (h, w) in zip(corners, sizes)]
        masks = rectangle_logits(40, 37, boxes, rng)
        probs = rng.permutation(np.linspace(0.05, 0.99, n, dtype=np.float32))
        iou_threshold = float(rng.choice([0.0, 0.1, 0.3, 0.5, 0.7]))
        keep = nms_masks(probs, masks, 0.3, iou_threshold)
        assert np.array_equal(keep, official_nms(probs, masks, 0.3, iou_threshold)), trial
        suppressed += int(((probs > 0.3) & ~keep).sum())
        binary = masks > 0
        ious = torch.from_numpy(mask_iou(binary, binary))
        want = generic_nms_cpu(ious, torch.from_numpy(probs), iou_threshold).tolist()
        assert greedy_nms(ious.numpy(), probs, iou_threshold) == want
        assert TwinKernels().generic_nms(ious, torch.from_numpy(probs), iou_threshold).tolist() == want
    assert suppressed > 0


def float32_edge_requests():
    """Thresholds compared in float32: prob 0.3f is not > 0.3; IoU 1/3 (0.33333334f) is not > 1/3."""
    masks = np.full((3, 2, 3), -1.0, np.float32)
    masks[0, 0, 0:2] = 1.0
    masks[1, 0, 1:3] = 1.0  # IoU with 0: 1 / 3
    masks[2, 1, :] = 1.0
    return [
        (np.array([0.9, 0.8, np.float32(0.3)], np.float32), masks, 0.3, 1 / 3, [True, True, False]),
        (np.array([0.9, 0.8, 0.7], np.float32), masks, 0.3, 0.33, [True, False, True]),
    ]


def test_float32_thresholds_and_ties(official):
    for probs, masks, prob_threshold, iou_threshold, want in float32_edge_requests():
        assert nms_masks(probs, masks, prob_threshold, iou_threshold).tolist() == want
        assert official_nms(probs, masks, prob_threshold, iou_threshold).tolist() == want
    # Equal scores: the lower index first (a choice: the official order is unspecified there).
    masks = np.ones((3, 4, 4), np.float32)
    assert nms_masks(np.array([0.6, 0.6, 0.6], np.float32), masks, 0.5, 0.5).tolist() == [True, False, False]


# --- the C++ against the twins ---------------------------------------------------------------


def random_logits(rng, height, width, scale) -> np.ndarray:
    """Smooth random logits (blobs and holes of many sizes) with speckle, float32."""
    coarse = rng.normal(size=(height // scale + 2, width // scale + 2))
    ys = np.arange(height) / scale
    xs = np.arange(width) / scale
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    smooth = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    speckle = rng.random((height, width)) < 0.02
    smooth[speckle] = -smooth[speckle]
    return smooth.astype(np.float32)


def test_cli_components_equal_twin():
    rng = np.random.default_rng(21)
    masks = list(hand_made_masks().values())
    masks += [np.zeros((0, 5), bool), rng.random((17, 23)) < 0.5, rng.random((288, 288)) < 0.45]
    masks += [random_logits(rng, 288, 288, 9) > 0]
    masks += [rng.random(tuple(rng.integers(1, 30, size=2))) < rng.random() for _ in range(20)]
    requests = [{"op": "components", "shape": list(m.shape), "mask": flat(m.astype(np.uint8))} for m in masks]
    # A batch [B, H, W] in one request, given as nested lists of bools.
    batch = rng.random((3, 9, 10)) < 0.5
    requests.append({"op": "components", "shape": [3, 9, 10], "mask": batch.tolist()})
    answers = cli(requests)
    for mask, answer in zip(masks, answers):
        got = np.array(answer["areas"]).reshape(mask.shape)
        assert np.array_equal(got, component_areas(mask))
        assert np.array_equal(got, skimage_areas(mask))
    want = np.stack([component_areas(m) for m in batch])
    assert np.array_equal(np.array(answers[-1]["areas"]).reshape(batch.shape), want)


def test_cli_fill_holes_equals_twin():
    rng = np.random.default_rng(22)
    cases = []
    for logits, _ in fill_holes_cases().values():
        for max_area in (MAX_AREA, 1, 30):
            cases.append((logits, max_area, True, True))
    cases.append((fill_holes_cases()["sprinkles"][0], MAX_AREA, False, True))
    cases.append((fill_holes_cases()["small_holes"][0], MAX_AREA, True, False))
    cases.append((fill_holes_cases()["small_holes"][0], 0, True, True))
    cases.append((random_logits(rng, 288, 288, 12), MAX_AREA, True, True))
    cases.append((random_logits(rng, 288, 288, 5), 200, True, True))
    cases.append((random_logits(rng, 17, 23, 3), 8, True, True))
    for _ in range(10):
        height, width = (int(v) for v in rng.integers(1, 48, size=2))
        logits = random_logits(rng, height, width, int(rng.integers(1, 6)))
        cases.append((logits, int(rng.integers(1, 40)), True, True))
    requests = [
        {"op": "fill_holes", "shape": list(logits.shape), "logits": flat(logits), "max_area": max_area,
         "fill_holes": holes, "remove_sprinkles": sprinkles}
        for logits, max_area, holes, sprinkles in cases
    ]
    changed = 0
    for (logits, max_area, holes, sprinkles), answer in zip(cases, cli(requests)):
        got = np.array(answer["logits"], np.float32).reshape(logits.shape)
        want = fill_holes_in_mask_scores(logits, max_area, fill_holes=holes, remove_sprinkles=sprinkles)
        assert np.array_equal(got, want), (logits.shape, max_area, holes, sprinkles)
        changed += int((got != logits).sum())
    assert changed > 0


def test_cli_mask_iou_and_nms_equal_twin():
    rng = np.random.default_rng(23)
    requests, expected = [], []
    for height, width, n, m in ((17, 23, 6, 5), (288, 288, 4, 3), (1, 1, 2, 2), (5, 64, 3, 1), (3, 4, 0, 2)):
        a = random_logits(rng, n * height, width, 4).reshape(n, height, width)
        b = random_logits(rng, m * height, width, 4).reshape(m, height, width)
        a[:1] = np.where(a[:1] > 0, 0.0, a[:1])  # exact zeros are background
        requests.append({"op": "mask_iou", "shape": [height, width], "a": flat(a), "b": flat(b)})
        expected.append(("iou", mask_iou(a > 0, b > 0)))
    probs, masks = overlapping_detections()
    for iou_threshold in (0.1, 0.5):
        requests.append({"op": "nms", "shape": [44, 41], "probs": flat(probs), "masks": flat(masks),
                         "prob_threshold": 0.5, "iou_threshold": iou_threshold})
        expected.append(("keep", nms_masks(probs, masks, 0.5, iou_threshold)))
    for probs, masks, prob_threshold, iou_threshold, want in float32_edge_requests():
        requests.append({"op": "nms", "shape": [2, 3], "probs": flat(probs), "masks": flat(masks),
                         "prob_threshold": prob_threshold, "iou_threshold": iou_threshold})
        expected.append(("keep", np.array(want)))
    requests.append({"op": "nms", "shape": [4, 4], "probs": [0.6, 0.6, 0.6], "masks": flat(np.ones((3, 4, 4))),
                     "prob_threshold": 0.5, "iou_threshold": 0.5})
    expected.append(("keep", np.array([True, False, False])))
    requests.append({"op": "nms", "shape": [4, 4], "probs": [], "masks": [],
                     "prob_threshold": 0.5, "iou_threshold": 0.5})
    expected.append(("keep", np.zeros(0, bool)))
    shapes = [(288, 288, 8), (17, 23, 20)] + [(40, 37, int(rng.integers(1, 40))) for _ in range(12)]
    for height, width, n in shapes:
        corners = rng.integers(0, min(height, width) - 1, size=(n, 2))
        sizes = rng.integers(1, max(2, min(height, width) // 2), size=(n, 2))
        boxes = [(y, x, y + h, x + w) for (y, x), (h, w) in zip(corners, sizes)]
        masks = np.sign(rectangle_logits(height, width, boxes, rng))  # +-1: smaller requests
        probs = rng.random(n).astype(np.float32)
        iou_threshold = float(rng.choice([0.0, 0.1, 0.5, 0.8]))
        requests.append({"op": "nms", "shape": [height, width], "probs": flat(probs), "masks": flat(masks),
                         "prob_threshold": 0.2, "iou_threshold": iou_threshold})
        expected.append(("keep", nms_masks(probs, masks, 0.2, iou_threshold)))
    suppressed = 0
    for request, (key, want), answer in zip(requests, expected, cli(requests)):
        got = np.array(answer[key], want.dtype)
        if key == "iou":
            assert answer["shape"] == list(want.shape)
            got = got.reshape(want.shape)
        else:
            valid = np.array(request["probs"], np.float32) > np.float32(request["prob_threshold"])
            suppressed += int(valid.sum() - got.sum())
        assert np.array_equal(got, want), request["op"]
    assert suppressed > 0


def test_cli_rejects_bad_requests():
    assert CLI.exists(), f"{CLI} is missing: run `npm run build:native` first"
    for request in (
        {"op": "components", "shape": [2, 2], "mask": [1, 0, 1]},
        {"op": "fill_holes", "shape": [1, 1], "logits": [1.0]},
        {"op": "mask_iou", "shape": [2, 2], "a": [1, 1, 1], "b": [1, 1, 1, 1]},
        {"op": "nms", "shape": [1, 1], "probs": [0.5], "masks": [1, 1], "prob_threshold": 0, "iou_threshold": 0},
        {"op": "unknown"},
    ):
        done = subprocess.run(
            [str(CLI), "postprocess"], input=json.dumps(request), capture_output=True, text=True
        )
        assert done.returncode == 1 and "postprocess" in done.stderr, request
