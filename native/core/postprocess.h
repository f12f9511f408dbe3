// What the image and video pipelines share after the model calls: stage timing, mask logits
// to COCO RLE at the original size, boxes from mask bounds, tensor byte counts. Internal to
// native/core (includes ATen).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"
#include "executor.h"
#include "rle.h"

namespace sam3 {

// Bytes of a tensor's elements (what it holds, not its storage).
int64_t tensorBytes(const at::Tensor& tensor);

// A contiguous tensor that owns exactly its bytes (outputs can be views into a larger buffer).
at::Tensor owned(const at::Tensor& tensor);

// Stage times of one task, on its executor thread. On the CPU the work of a stage has run when
// lap() is called: wall time. On a device with streams (CUDA) a timing event is recorded on the
// executor's stream at each lap, without waiting; times() waits for the last one and reads them
// all: one wait per task instead of one per stage. Tasks that copy results to the host (detect,
// points, the tracker) have waited for that work anyway; the image and text encoders, whose
// outputs stay on the device, wait once at their end, as before. Each stage's time is then the
// device's, from the end of the previous stage's work to the end of its own.
class StageClock {
 public:
  explicit StageClock(const Executor& executor);

  // Ends the current stage and adds its time to `stage`.
  void lap(const char* stage);
  const StageTimes& times();

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::optional<c10::Stream> stream_;
  std::vector<std::pair<std::string, c10::Event>> marks_;  // the first is the start
  StageTimes times_;
};

// COCO RLE of each mask: logits [K, M, M] are resized bilinearly (align_corners=False, no
// antialias) to the original height x width and binarized at > 0, exactly as
// interpolate(logits[None], (H, W), mode="bilinear") > 0. With `bounds`, also each binarized
// mask's pixel extent. Laps "postprocess" and "rle".
std::vector<std::string> encodeMasks(const at::Tensor& maskLogits, int64_t H, int64_t W,
                                     StageClock& clock, std::vector<MaskBounds>* bounds = nullptr);

// Normalized cx, cy, w, h of a mask's pixel extent, using pixel edges (a pixel at column x
// spans x / W .. (x + 1) / W); zeros for an empty mask.
std::array<float, 4> normalizedBox(const MaskBounds& bounds, int64_t H, int64_t W);

}  // namespace sam3
