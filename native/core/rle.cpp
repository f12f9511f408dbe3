#include "rle.h"

#include <algorithm>
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

MaskBounds rleBounds(const std::vector<uint32_t>& counts, size_t height) {
  MaskBounds bounds;
  if (height == 0) return bounds;
  size_t start = 0;
  // Counts alternate background, foreground, ... starting with background.
  for (size_t i = 0; i < counts.size(); start += counts[i], ++i) {
    if (i % 2 == 0 || counts[i] == 0) continue;
    const size_t last = start + counts[i] - 1;
    const size_t firstColumn = start / height, lastColumn = last / height;
    // A run that wraps into a later column reaches its first column's bottom row and a later
    // column's top row, so its rows extend from 0 to height - 1.
    const size_t top = firstColumn == lastColumn ? start % height : 0;
    const size_t bottom = firstColumn == lastColumn ? last % height : height - 1;
    if (bounds.empty) {
      bounds = MaskBounds{false, firstColumn, lastColumn, top, bottom};
    } else {
      bounds.minX = std::min(bounds.minX, firstColumn);
      bounds.maxX = std::max(bounds.maxX, lastColumn);
      bounds.minY = std::min(bounds.minY, top);
      bounds.maxY = std::max(bounds.maxY, bottom);
    }
  }
  return bounds;
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

std::string encodeRleColumnMajor(const uint8_t* columnMajor, size_t height, size_t width,
                                 MaskBounds* bounds) {
  std::vector<uint32_t> counts = rleCounts(columnMajor, height * width);
  if (bounds != nullptr) *bounds = rleBounds(counts, height);
  return rleCountsToString(counts);
}

std::string encodeRleRowMajor(const uint8_t* rowMajor, size_t height, size_t width) {
  std::vector<uint8_t> columnMajor(height * width);
  for (size_t y = 0; y < height; ++y) {
    const uint8_t* row = rowMajor + y * width;
    for (size_t x = 0; x < width; ++x) columnMajor[x * height + y] = row[x] != 0 ? 1 : 0;
  }
  return encodeRleColumnMajor(columnMajor.data(), height, width);
}

std::string encodeRlePositiveRowMajor(const float* logits, size_t height, size_t width,
                                      MaskBounds* bounds) {
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
  return encodeRleColumnMajor(columnMajor.data(), height, width, bounds);
}

}  // namespace sam3
