#include "image_pipeline.h"

#include <ATen/ATen.h>

#include <cstring>

namespace sam3 {

namespace {

// uint8 CHW [1, 3, size, size] as torchvision's v2 Resize(antialias=True) produces it.
at::Tensor resizeU8(const at::Tensor& imageU8, int64_t size) {
  if (imageU8.device().is_cpu()) {
    // On CPU torch resizes uint8 directly (torchvision calls the same kernel): the result is
    // bit-identical to interpolate(u8[None], mode="bilinear", antialias=True).
    return at::_upsample_bilinear2d_aa(imageU8, {size, size}, /*align_corners=*/false);
  }
  // Elsewhere torchvision resizes in float32, then rounds back to uint8. Bilinear weights are
  // non-negative, so the clamp only guards against rounding at the ends of the range.
  at::Tensor resized = at::_upsample_bilinear2d_aa(imageU8.to(at::kFloat), {size, size},
                                                   /*align_corners=*/false);
  return resized.round_().clamp_(0, 255).to(at::kByte);
}

// [1, 3, H, W] uint8 view of the caller's HWC bytes on `device`: a channels-last view on CPU
// (the layout the uint8 kernel prefers), one upload elsewhere.
at::Tensor rgbView(const uint8_t* rgb, int64_t width, int64_t height, const c10::Device& device) {
  at::Tensor hwc = at::from_blob(const_cast<uint8_t*>(rgb), {height, width, 3},
                                 at::TensorOptions().dtype(at::kByte));
  if (!device.is_cpu()) hwc = hwc.to(device);
  return hwc.permute({2, 0, 1}).unsqueeze(0);
}

}  // namespace

at::Tensor preprocessImage(const uint8_t* rgb, int64_t width, int64_t height, int64_t size,
                           const ImageNormalization& normalization, const c10::Device& device) {
  at::Tensor resized = resizeU8(rgbView(rgb, width, height, device), size);
  at::TensorOptions floatOptions = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor mean = at::tensor(at::ArrayRef<float>(normalization.mean.data(), 3), floatOptions)
                        .view({1, 3, 1, 1});
  at::Tensor stdDev = at::tensor(at::ArrayRef<float>(normalization.stdDev.data(), 3), floatOptions)
                          .view({1, 3, 1, 1});
  // torchvision's ToDtype(float32, scale=True) multiplies by 1/255; Normalize subtracts and
  // divides in float32.
  return resized.to(at::kFloat).mul_(1.0 / 255.0).sub_(mean).div_(stdDev).contiguous();
}

std::vector<uint8_t> resizeRgbToSquareU8(const uint8_t* rgb, int64_t width, int64_t height,
                                         int64_t size) {
  at::Tensor resized = resizeU8(rgbView(rgb, width, height, c10::Device(c10::kCPU)), size);
  at::Tensor chw = resized.squeeze(0).contiguous();
  std::vector<uint8_t> out(static_cast<size_t>(chw.numel()));
  std::memcpy(out.data(), chw.data_ptr<uint8_t>(), out.size());
  return out;
}

std::vector<float> preprocessImageOnCpu(const uint8_t* rgb, int64_t width, int64_t height,
                                        int64_t size, const ImageNormalization& normalization) {
  at::Tensor pixels =
      preprocessImage(rgb, width, height, size, normalization, c10::Device(c10::kCPU));
  std::vector<float> out(static_cast<size_t>(pixels.numel()));
  std::memcpy(out.data(), pixels.data_ptr<float>(), out.size() * sizeof(float));
  return out;
}

}  // namespace sam3
