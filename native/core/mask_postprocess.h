// The official SAM3 mask post-processing of video detections and tracks (facebookresearch/sam3:
// sam3/perflib/connected_components.py, sam3/model/sam3_tracker_utils.py
// fill_holes_in_mask_scores, sam3/perflib/nms.py; transformers' modeling_sam3_video.py has
// the same code but skips it without the `kernels` package). Plain C++17, no LibTorch.
// Pure-Python twins: tools/sam3_tools/mask_postprocess.py; tests:
// tools/tests/test_mask_postprocess.py (through `sam3_core_cli postprocess`).
//
// Masks are row-major height x width. Mask logits are float32: foreground is logit > 0 and
// background logit <= 0 (a NaN is neither, as with torch's comparisons). Thresholds given as
// double are compared in float32 (cast first), as torch and numpy compare a float32 tensor
// with a Python float.
#pragma once

#include <cstdint>
#include <vector>

namespace sam3 {

// Component size (pixel count, 8-connectivity as skimage.measure.label's default for 2-D) at
// every pixel where mask[i] != 0, 0 elsewhere. Union-find over the rows' runs of foreground:
// one pass over the pixels, then work in the number of runs. Areas must fit int32.
void componentAreas(const uint8_t* mask, int64_t height, int64_t width, int32_t* areas);

// fill_holes_in_mask_scores on one mask of logits, in place. Nothing when maxArea <= 0.
// fillHoles: background (logit <= 0) components of area <= maxArea become 0.1f.
// removeSprinkles (after the filling): foreground (logit > 0) components of area <=
// min(floor(foreground pixels / 2), maxArea) become -0.1f (the half-area rule keeps a tiny
// object that is alone in its mask).
void fillHolesInMaskScores(float* logits, int64_t height, int64_t width, int64_t maxArea,
                           bool fillHoles = true, bool removeSprinkles = true);

// IoU of binarized (> 0) masks, n x m row-major: intersection / max(union, 1) in float32, as
// transformers' mask_iou. a: n masks, b: m masks, each `pixels` floats, back to back.
std::vector<float> maskIou(const float* a, int64_t n, const float* b, int64_t m, int64_t pixels);

// nms_masks: one keep flag per detection. Valid: probs[i] > probThreshold (invalid ones are
// never kept). Greedy over the valid ones by descending score: the best remaining one is kept
// and every remaining one whose mask IoU with it is > iouThreshold is dropped. Equal scores:
// the lower index first (the official CPU code's numpy argsort leaves ties unspecified).
// masks: probs.size() masks of `pixels` logits, back to back.
std::vector<bool> nmsMasks(const std::vector<float>& probs, const float* masks, int64_t pixels,
                           double probThreshold, double iouThreshold);

}  // namespace sam3
