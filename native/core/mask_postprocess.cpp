#include "mask_postprocess.h"

#include <algorithm>
#include <numeric>

namespace sam3 {

namespace {

inline int popcount64(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(v);
#else
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
  return static_cast<int>((v * 0x0101010101010101ULL) >> 56);
#endif
}

// Binarized (> 0) masks packed 64 pixels a word, with each mask's area and the range of words
// [first, last) outside which it has no foreground (empty masks: an empty range), so that pairs
// of small or distant masks cost little.
struct PackedMasks {
  int64_t words = 0;
  std::vector<uint64_t> bits;  // count x words
  std::vector<int64_t> area, first, last;

  PackedMasks(const float* masks, int64_t pixels, const std::vector<int64_t>& which)
      : words((pixels + 63) / 64),
        bits(which.size() * static_cast<size_t>(words), 0),
        area(which.size(), 0),
        first(which.size(), 0),
        last(which.size(), 0) {
    for (size_t k = 0; k < which.size(); ++k) {
      const float* mask = masks + which[k] * pixels;
      uint64_t* out = bits.data() + k * static_cast<size_t>(words);
      int64_t lo = words, hi = 0, count = 0;
      for (int64_t w = 0; w < words; ++w) {
        const int64_t begin = w * 64, end = std::min(pixels, begin + 64);
        uint64_t word = 0;
        for (int64_t p = begin; p < end; ++p) {
          word |= static_cast<uint64_t>(mask[p] > 0.0f) << (p - begin);
        }
        out[w] = word;
        if (word != 0) {
          lo = std::min(lo, w);
          hi = w + 1;
          count += popcount64(word);
        }
      }
      area[k] = count;
      first[k] = hi == 0 ? 0 : lo;
      last[k] = hi;
    }
  }

  const uint64_t* mask(size_t k) const { return bits.data() + k * static_cast<size_t>(words); }
};

// transformers' mask_iou: intersection.float() / union.float().clamp(min=1), in float32 (exact
// integer counts below 2^24 pixels).
float packedIou(const PackedMasks& a, size_t i, const PackedMasks& b, size_t j) {
  const int64_t lo = std::max(a.first[i], b.first[j]);
  const int64_t hi = std::min(a.last[i], b.last[j]);
  const uint64_t* x = a.mask(i);
  const uint64_t* y = b.mask(j);
  int64_t intersection = 0;
  for (int64_t w = lo; w < hi; ++w) intersection += popcount64(x[w] & y[w]);
  const int64_t unionArea = a.area[i] + b.area[j] - intersection;
  return static_cast<float>(intersection) / static_cast<float>(std::max<int64_t>(unionArea, 1));
}

std::vector<int64_t> iota(int64_t count) {
  std::vector<int64_t> indices(static_cast<size_t>(std::max<int64_t>(count, 0)));
  std::iota(indices.begin(), indices.end(), int64_t{0});
  return indices;
}

}  // namespace

void componentAreas(const uint8_t* mask, int64_t height, int64_t width, int32_t* areas) {
  if (height <= 0 || width <= 0) return;
  std::fill(areas, areas + height * width, 0);
  // Horizontal runs of foreground, row by row: columns [begin, end) of row `row`. rowStart[r]
  // is the first run of row r (rowStart[height]: the number of runs).
  struct Run {
    int64_t row, begin, end;
  };
  std::vector<Run> runs;
  std::vector<size_t> rowStart(static_cast<size_t>(height) + 1, 0);
  for (int64_t y = 0; y < height; ++y) {
    rowStart[static_cast<size_t>(y)] = runs.size();
    const uint8_t* row = mask + y * width;
    int64_t x = 0;
    while (x < width) {
      while (x < width && row[x] == 0) ++x;
      if (x == width) break;
      const int64_t begin = x;
      while (x < width && row[x] != 0) ++x;
      runs.push_back({y, begin, x});
    }
  }
  rowStart[static_cast<size_t>(height)] = runs.size();
  // Union-find over runs. With 8-connectivity, a run of row y and one of row y + 1 are
  // connected when their columns come within one column: next.begin <= run.end and
  // run.begin <= next.end (ends exclusive). Both rows' runs are sorted and disjoint, so one
  // merge-like pass per pair of rows finds every such pair: the run that ends first cannot
  // touch any later run of the other row.
  std::vector<size_t> parent(runs.size());
  std::iota(parent.begin(), parent.end(), size_t{0});
  auto find = [&parent](size_t i) {
    while (parent[i] != i) {
      parent[i] = parent[parent[i]];
      i = parent[i];
    }
    return i;
  };
  for (int64_t y = 0; y + 1 < height; ++y) {
    size_t i = rowStart[static_cast<size_t>(y)], j = rowStart[static_cast<size_t>(y) + 1];
    const size_t iEnd = rowStart[static_cast<size_t>(y) + 1];
    const size_t jEnd = rowStart[static_cast<size_t>(y) + 2];
    while (i < iEnd && j < jEnd) {
      if (runs[j].begin <= runs[i].end && runs[i].begin <= runs[j].end) {
        const size_t a = find(i), b = find(j);
        if (a != b) parent[std::max(a, b)] = std::min(a, b);
      }
      if (runs[i].end < runs[j].end) {
        ++i;
      } else {
        ++j;
      }
    }
  }
  // Component areas, summed at each root, then written over every run of the component.
  std::vector<int64_t> total(runs.size(), 0);
  for (size_t i = 0; i < runs.size(); ++i) total[find(i)] += runs[i].end - runs[i].begin;
  for (size_t i = 0; i < runs.size(); ++i) {
    int32_t* row = areas + runs[i].row * width;
    std::fill(row + runs[i].begin, row + runs[i].end, static_cast<int32_t>(total[find(i)]));
  }
}

// The official code pads odd heights and widths to even ones with zeros (bottom and right)
// before labelling, for cc_torch. Padding pixels are background of the labelled image, and
// with 8-connectivity a background row or column at the border joins or splits no component,
// so every component and its area are unchanged: no padding here.
void fillHolesInMaskScores(float* logits, int64_t height, int64_t width, int64_t maxArea,
                           bool fillHoles, bool removeSprinkles) {
  if (maxArea <= 0 || height <= 0 || width <= 0) return;
  const size_t pixels = static_cast<size_t>(height * width);
  std::vector<uint8_t> binary(pixels);
  std::vector<int32_t> areas(pixels);
  if (fillHoles) {
    // Small background components (holes) become foreground with a small positive score.
    for (size_t i = 0; i < pixels; ++i) binary[i] = logits[i] <= 0.0f;
    componentAreas(binary.data(), height, width, areas.data());
    for (size_t i = 0; i < pixels; ++i) {
      if (binary[i] && areas[i] <= maxArea) logits[i] = 0.1f;
    }
  }
  if (removeSprinkles) {
    // Small foreground components become background with a small negative score; only those
    // under both maxArea and half of the mask's foreground, which keeps a tiny lone object.
    int64_t foreground = 0;
    for (size_t i = 0; i < pixels; ++i) {
      binary[i] = logits[i] > 0.0f;
      foreground += binary[i];
    }
    const int64_t threshold = std::min(foreground / 2, maxArea);
    componentAreas(binary.data(), height, width, areas.data());
    for (size_t i = 0; i < pixels; ++i) {
      if (binary[i] && areas[i] <= threshold) logits[i] = -0.1f;
    }
  }
}

std::vector<float> maskIou(const float* a, int64_t n, const float* b, int64_t m, int64_t pixels) {
  std::vector<float> ious(static_cast<size_t>(std::max<int64_t>(n, 0) * std::max<int64_t>(m, 0)));
  if (ious.empty()) return ious;
  const PackedMasks packedA(a, pixels, iota(n));
  const PackedMasks packedB(b, pixels, iota(m));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      ious[static_cast<size_t>(i * m + j)] =
          packedIou(packedA, static_cast<size_t>(i), packedB, static_cast<size_t>(j));
    }
  }
  return ious;
}

std::vector<bool> nmsMasks(const std::vector<float>& probs, const float* masks, int64_t pixels,
                           double probThreshold, double iouThreshold) {
  const float minProb = static_cast<float>(probThreshold);
  const float maxIou = static_cast<float>(iouThreshold);
  std::vector<bool> keep(probs.size(), false);
  std::vector<int64_t> valid;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] > minProb) valid.push_back(static_cast<int64_t>(i));
  }
  if (valid.empty()) return keep;
  const PackedMasks packed(masks, pixels, valid);
  // Positions in `valid`, best score first; stable, so equal scores keep the lower index first.
  std::vector<size_t> order(valid.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return probs[valid[x]] > probs[valid[y]]; });
  std::vector<bool> dropped(valid.size(), false);
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    if (dropped[i]) continue;
    keep[static_cast<size_t>(valid[i])] = true;
    for (size_t l = k + 1; l < order.size(); ++l) {
      const size_t j = order[l];
      if (!dropped[j] && packedIou(packed, i, packed, j) > maxIou) dropped[j] = true;
    }
  }
  return keep;
}

}  // namespace sam3
