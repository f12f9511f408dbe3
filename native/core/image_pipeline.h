// Image preprocessing exactly as the official SAM3 transform (torchvision v2):
//   uint8 RGB HWC -> CHW uint8 -> antialiased bilinear resize to R x R (uint8 result)
//   -> float32 * (1/255) -> (x - mean) / std.
// Light header: LibTorch types are only forward-declared.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace at {
class Tensor;
}  // namespace at
namespace c10 {
struct Device;
}  // namespace c10

namespace sam3 {

struct ImageNormalization {
  std::array<float, 3> mean{};
  std::array<float, 3> stdDev{};
};

// pixel_values [1, 3, size, size] float32 on `device`. `rgb` is width * height * 3 bytes,
// row-major RGB, read in place (no copy on CPU; one uint8 upload on CUDA).
at::Tensor preprocessImage(const uint8_t* rgb, int64_t width, int64_t height, int64_t size,
                           const ImageNormalization& normalization, const c10::Device& device);

// The uint8 resize stage alone on CPU, as CHW bytes (3 * size * size): what torch's
// interpolate(u8[None], (size, size), mode="bilinear", antialias=True) returns. For parity
// checks against the Python reference.
std::vector<uint8_t> resizeRgbToSquareU8(const uint8_t* rgb, int64_t width, int64_t height,
                                         int64_t size);

// The whole preprocessing on CPU as CHW float32 values (3 * size * size): pixel_values for
// parity checks against torchvision's v2 transform.
std::vector<float> preprocessImageOnCpu(const uint8_t* rgb, int64_t width, int64_t height,
                                        int64_t size, const ImageNormalization& normalization);

}  // namespace sam3
