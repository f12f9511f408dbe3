// COCO run-length encoding, byte-identical to pycocotools' mask.encode + rleToString.
// Pure C++ (no LibTorch): the binding's encodeRle and the tests use it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sam3 {

// Pixel extent of a mask's foreground: columns minX..maxX and rows minY..maxY, inclusive.
struct MaskBounds {
  bool empty = true;  // no foreground pixel (the other fields are then 0)
  size_t minX = 0, maxX = 0, minY = 0, maxY = 0;
};

// Bounds of the foreground from column-major run lengths (rleCounts) of a mask with `height`
// rows. Walks the runs only: O(number of runs), no pass over the pixels.
MaskBounds rleBounds(const std::vector<uint32_t>& counts, size_t height);

// Run lengths of a binary mask given in column-major order (pycocotools' order: x outer, y
// inner). Nonzero bytes are foreground. The first count is the number of leading background
// pixels (0 when the first pixel is foreground).
std::vector<uint32_t> rleCounts(const uint8_t* columnMajor, size_t pixelCount);

// pycocotools' rleToString: 6-bit LEB128-like digits in ASCII 48..111, where each count from
// the fourth on is stored as its difference to the count two places earlier.
std::string rleCountsToString(const std::vector<uint32_t>& counts);

// Compressed counts string of a mask stored column-major (a transposed height x width mask).
// With `bounds`, also the foreground's extent.
std::string encodeRleColumnMajor(const uint8_t* columnMajor, size_t height, size_t width,
                                 MaskBounds* bounds = nullptr);

// Compressed counts string of a row-major height x width mask (walks it column by column).
std::string encodeRleRowMajor(const uint8_t* rowMajor, size_t height, size_t width);

// Compressed counts string of a row-major height x width map of mask logits, binarized as
// logit > 0 (NaN is background, as torch's gt(0)). Walks the rows column by column, so the
// map needs no transposed copy. With `bounds`, also the foreground's extent.
std::string encodeRlePositiveRowMajor(const float* logits, size_t height, size_t width,
                                      MaskBounds* bounds = nullptr);

}  // namespace sam3
