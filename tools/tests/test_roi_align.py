"""The pure-torch ROI align against hand-computed values and a loop transliteration of
torchvision's CPU kernel (roi_align_kernel.cpp, aligned=False, sampling_ratio=-1)."""

import math

import pytest
import torch

from sam3_tools.roi_align import roi_align, roi_align_batched


def linear_map(height: int, width: int) -> torch.Tensor:
    """f(y, x) = 4y + x: bilinear interpolation of a linear map is exact."""
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    return (4 * ys + xs)[None, None]


def loop_roi_align(features, rois, pooled):
    """torchvision's algorithm written as loops over bins and samples (the spec)."""
    channels, height, width = features.shape[1:]
    out = torch.zeros(rois.shape[0], channels, pooled, pooled)

    def bilinear(image, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(channels)
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        return (
            hy * hx * image[:, y_low, x_low]
            + hy * lx * image[:, y_low, x_high]
            + ly * hx * image[:, y_high, x_low]
            + ly * lx * image[:, y_high, x_high]
        )

    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        image = features[int(b)]
        roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        bin_w, bin_h = roi_w / pooled, roi_h / pooled
        grid_w, grid_h = math.ceil(roi_w / pooled), math.ceil(roi_h / pooled)
        count = max(grid_w * grid_h, 1)
        for ph in range(pooled):
            for pw in range(pooled):
                total = torch.zeros(channels)
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += bilinear(image, y, x)
                out[k, :, ph, pw] = total / count
    return out


def test_whole_map_box_on_a_linear_map_by_hand():
    # 4x4 map, box (0,0)-(4,4), 2x2 bins of 2 px, 2x2 samples each at 0.5/1.5 and 2.5/3.5.
    # Bin (0,0): mean of f at y,x in {0.5,1.5} = f(1,1) = 5.
    # Bin (0,1): x samples 2.5 and 3.5; 3.5 lies past the last column and clamps to 3, so the
    # mean x is 2.75 and the value 4*1 + 2.75 = 6.75. Bin (1,0): y likewise -> 4*2.75 + 1 = 12.
    out = roi_align(linear_map(4, 4), [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], 2)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[5.0, 6.75], [12.0, 13.75]]


def test_small_box_is_widened_to_one_pixel_by_hand():
    # Box (1,1)-(1.2,1.2) is widened to 1x1 (aligned=False); one 1x1 bin, one sample at 1.5.
    out = roi_align(linear_map(4, 4), [torch.tensor([[1.0, 1.0, 1.2, 1.2]])], 1)
    assert out.item() == pytest.approx(4 * 1.5 + 1.5)


def test_samples_far_outside_the_map_are_zero():
    out = roi_align(linear_map(4, 4), [torch.tensor([[-9.0, -9.0, -5.0, -5.0]])], 2)
    assert out.abs().max().item() == 0.0


def test_samples_slightly_left_of_the_map_clamp_to_the_first_column():
    # x in [-1, 0] clamps to 0: box (-1,0)-(0,1), one sample at (-0.5, 0.5) -> f(0.5, 0) = 2.
    out = roi_align(linear_map(4, 4), [torch.tensor([[-1.0, 0.0, 0.0, 1.0]])], 1)
    assert out.item() == pytest.approx(2.0)


@pytest.mark.parametrize("size", [(9, 9), (12, 17)])
def test_matches_the_loop_kernel_for_tiny_to_image_sized_boxes(size):
    torch.manual_seed(0)
    height, width = size
    features = torch.randn(2, 3, height, width)
    boxes = [
        [0, 0.0, 0.0, float(width), float(height)],  # the whole map
        [1, 0.3, 0.2, 0.9, 0.7],  # sub-pixel
        [0, 2.2, 1.7, 7.9, 8.4],
        [1, -0.8, -0.4, 3.3, 2.1],  # sticks out at the top left
        [0, width - 3.5, height - 2.5, width + 0.7, height + 0.9],  # sticks out at the bottom right
        [1, 1.0, 1.0, 1.0, 1.0],  # empty
    ]
    rois = torch.tensor(boxes)
    expected = loop_roi_align(features, rois, 7)
    actual = roi_align(features, rois, 7)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_batched_form_equals_the_per_image_list_form():
    torch.manual_seed(1)
    features = torch.randn(3, 4, 10, 10)
    boxes = torch.rand(3, 5, 4) * 5
    boxes[..., 2:] += boxes[..., :2]
    expected = roi_align(features, list(boxes.unbind(0)), 7)
    torch.testing.assert_close(roi_align_batched(features, boxes, 7), expected)


def test_matches_torchvision_where_installed():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    features = torch.randn(2, 8, 72, 72)
    boxes = torch.rand(2, 6, 4) * 40
    boxes[..., 2:] += boxes[..., :2]
    boxes[0, 0] = torch.tensor([0.0, 0.0, 72.0, 72.0])
    expected = torchvision.ops.roi_align(features, list(boxes.unbind(0)), 7)
    torch.testing.assert_close(roi_align(features, list(boxes.unbind(0)), 7), expected, rtol=1e-5, atol=1e-5)
