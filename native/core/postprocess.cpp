#include "postprocess.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>

namespace sam3 {

namespace {

// Upsampled float mask logits processed at once: bounds postprocessing memory for big images.
constexpr int64_t kMaskChunkBytes = 64ll << 20;

}  // namespace

int64_t tensorBytes(const at::Tensor& tensor) {
  return static_cast<int64_t>(tensor.numel()) * static_cast<int64_t>(tensor.element_size());
}

at::Tensor owned(const at::Tensor& tensor) {
  at::Tensor contiguous = tensor.contiguous();
  if (contiguous.storage().nbytes() != static_cast<size_t>(tensorBytes(contiguous))) {
    return contiguous.clone();
  }
  return contiguous;
}

StageClock::StageClock(const Executor& executor) {
  const c10::Device device(executor.device());
  if (device.is_cpu()) return;
  stream_ = c10::impl::VirtualGuardImpl(device.type()).getStream(device);
  lap("");
}

void StageClock::lap(const char* stage) {
  if (!stream_) {
    auto now = std::chrono::steady_clock::now();
    times_[stage] += std::chrono::duration<double, std::milli>(now - start_).count();
    start_ = now;
    return;
  }
  c10::Event event(stream_->device_type(), c10::EventFlag::BACKEND_DEFAULT);
  event.record(*stream_);
  marks_.emplace_back(stage, std::move(event));
}

const StageTimes& StageClock::times() {
  if (marks_.size() > 1) {
    marks_.back().second.synchronize();
    for (size_t i = 1; i < marks_.size(); ++i) {
      times_[marks_[i].first] += marks_[i - 1].second.elapsedTime(marks_[i].second);
    }
    marks_.erase(marks_.begin(), marks_.end() - 1);
  }
  return times_;
}

std::vector<std::string> encodeMasks(const at::Tensor& maskLogits, int64_t H, int64_t W,
                                     StageClock& clock, std::vector<MaskBounds>* bounds) {
  const int64_t K = maskLogits.size(0), M = maskLogits.size(1);
  std::vector<std::string> masks(static_cast<size_t>(K));
  if (bounds != nullptr) bounds->assign(static_cast<size_t>(K), MaskBounds{});
  auto boundsOf = [&](int64_t k) {
    return bounds == nullptr ? nullptr : &(*bounds)[static_cast<size_t>(k)];
  };
  if (K == 0) return masks;
  const size_t h = static_cast<size_t>(H), w = static_cast<size_t>(W);
  if (maskLogits.device().is_cpu()) {
    // One mask at a time per worker: a full-size plane stays in cache between the resize and
    // the encoder (about twice as fast as resizing all masks first). Each plane's values
    // equal those of the batched resize.
    at::Tensor logits = maskLogits.to(at::kFloat).contiguous();
    at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
      c10::InferenceMode inferenceMode;
      at::Tensor plane = at::empty({1, 1, H, W}, at::kFloat);
      for (int64_t k = begin; k < end; ++k) {
        at::upsample_bilinear2d_out(plane, logits[k].view({1, 1, M, M}), {H, W},
                                    /*align_corners=*/false);
        masks[static_cast<size_t>(k)] =
            encodeRlePositiveRowMajor(plane.data_ptr<float>(), h, w, boundsOf(k));
      }
    });
    clock.lap("rle");
    return masks;
  }
  // On an accelerator: resize and binarize there in chunks, bring back column-major bytes.
  const int64_t perChunk = std::max<int64_t>(1, kMaskChunkBytes / std::max<int64_t>(1, H * W * 4));
  for (int64_t start = 0; start < K; start += perChunk) {
    const int64_t n = std::min(perChunk, K - start);
    at::Tensor logits = maskLogits.narrow(0, start, n).to(at::kFloat).unsqueeze(0);
    at::Tensor upsampled = at::upsample_bilinear2d(logits, {H, W}, /*align_corners=*/false);
    // [n, W, H]: each mask's bytes in column-major order, as COCO RLE walks them.
    at::Tensor columnMajor = upsampled.squeeze(0).gt(0).transpose(1, 2).contiguous().to(at::kCPU);
    clock.lap("postprocess");
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(columnMajor.data_ptr<bool>());
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        masks[static_cast<size_t>(start + k)] =
            encodeRleColumnMajor(bytes + static_cast<size_t>(k) * h * w, h, w, boundsOf(start + k));
      }
    });
    clock.lap("rle");
  }
  return masks;
}

// In double, as numpy computes the reference's mask_box, then rounded once to float.
std::array<float, 4> normalizedBox(const MaskBounds& bounds, int64_t H, int64_t W) {
  if (bounds.empty) return {0, 0, 0, 0};
  const double x0 = static_cast<double>(bounds.minX) / static_cast<double>(W);
  const double x1 = static_cast<double>(bounds.maxX + 1) / static_cast<double>(W);
  const double y0 = static_cast<double>(bounds.minY) / static_cast<double>(H);
  const double y1 = static_cast<double>(bounds.maxY + 1) / static_cast<double>(H);
  return {static_cast<float>((x0 + x1) / 2), static_cast<float>((y0 + y1) / 2),
          static_cast<float>(x1 - x0), static_cast<float>(y1 - y0)};
}

}  // namespace sam3
