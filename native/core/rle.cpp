#include "rle.h"

#include <cstring>

namespace sam3 {

std::vector<uint32_t> rleCounts(const uint8_t* columnMajor, size_t pixelCount) {
  std::vector<uint32_t> counts;
  bool foreground = false;
  size_t runStart = 0;
  size_t i = 0;
  while (i < pixelCount) {
    // Skip whole 8-byte words that continue the current run: masks are mostly long runs.
    while (i + 8 <= pixelCount) {
      uint64_t word;
      std::memcpy(&word, columnMajor + i, sizeof(word));
      bool continues = foreground ? ((word - 0x0101010101010101ULL) & ~word &
                                     0x8080808080808080ULL) == 0  // no zero byte
                                  : word == 0;
      if (!continues) break;
      i += 8;
    }
    while (i < pixelCount && (columnMajor[i] != 0) == foreground) ++i;
    if (i >= pixelCount) break;
    counts.push_back(static_cast<uint32_t>(i - runStart));
    runStart = i;
    foreground = !foreground;
  }
  counts.push_back(static_cast<uint32_t>(pixelCount - runStart));
  return counts;
}

std::string rleCountsToString(const std::vector<uint32_t>& counts) {
  std::string out;
  out.reserve(counts.size() * 2);
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      int64_t c = x & 0x1f;
      x >>= 5;  // arithmetic shift, as in the C original on a signed long
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      out.push_back(static_cast<char>(c + 48));
    }
  }
  return out;
}

std::string encodeRleColumnMajor(const uint8_t* columnMajor, size_t height, size_t width) {
  return rleCountsToString(rleCounts(columnMajor, height * width));
}

std::string encodeRleRowMajor(const uint8_t* rowMajor, size_t height, size_t width) {
  std::vector<uint8_t> columnMajor(height * width);
  for (size_t y = 0; y < height; ++y) {
    const uint8_t* row = rowMajor + y * width;
    for (size_t x = 0; x < width; ++x) columnMajor[x * height + y] = row[x] != 0 ? 1 : 0;
  }
  return encodeRleColumnMajor(columnMajor.data(), height, width);
}

std::string encodeRlePositiveRowMajor(const float* logits, size_t height, size_t width) {
  // Binarize while transposing in tiles (cache-friendly both ways), then run-length encode
  // the column-major bytes with the word-skipping scanner.
  constexpr size_t kTile = 64;
  std::vector<uint8_t> columnMajor(height * width);
  for (size_t y0 = 0; y0 < height; y0 += kTile) {
    const size_t y1 = y0 + kTile < height ? y0 + kTile : height;
    for (size_t x0 = 0; x0 < width; x0 += kTile) {
      const size_t x1 = x0 + kTile < width ? x0 + kTile : width;
      for (size_t x = x0; x < x1; ++x) {
        uint8_t* column = columnMajor.data() + x * height;
        for (size_t y = y0; y < y1; ++y) column[y] = logits[y * width + x] > 0.0f ? 1 : 0;
      }
    }
  }
  return encodeRleColumnMajor(columnMajor.data(), height, width);
}

}  // namespace sam3
