// COCO run-length encoding, byte-identical to pycocotools' mask.encode + rleToString.
// Pure C++ (no LibTorch): the binding's encodeRle and the tests use it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sam3 {

// Run lengths of a binary mask given in column-major order (pycocotools' order: x outer, y
// inner). Nonzero bytes are foreground. The first count is the number of leading background
// pixels (0 when the first pixel is foreground).
std::vector<uint32_t> rleCounts(const uint8_t* columnMajor, size_t pixelCount);

// pycocotools' rleToString: 6-bit LEB128-like digits in ASCII 48..111, where each count from
// the fourth on is stored as its difference to the count two places earlier.
std::string rleCountsToString(const std::vector<uint32_t>& counts);

// Compressed counts string of a mask stored column-major (a transposed height x width mask).
std::string encodeRleColumnMajor(const uint8_t* columnMajor, size_t height, size_t width);

// Compressed counts string of a row-major height x width mask (walks it column by column).
std::string encodeRleRowMajor(const uint8_t* rowMajor, size_t height, size_t width);

// Compressed counts string of a row-major height x width map of mask logits, binarized as
// logit > 0 (NaN is background, as torch's gt(0)). Walks the rows column by column, so the
// map needs no transposed copy.
std::string encodeRlePositiveRowMajor(const float* logits, size_t height, size_t width);

}  // namespace sam3
