// What the linked LibTorch offers (runtimeInfo() in src/native/types.ts). Light header.
#pragma once

#include <cstdint>
#include <string>

namespace sam3 {

// What the core refuses beyond, for the server to refuse before any work (one declaration:
// kMaxImageSide, kMaxClicksPerQuery in engine.h; kMaxTrackerClicks, kMaxExemplarBoxes in
// tracker.h).
struct InputLimits {
  int64_t maxImageSide = 0;
  int64_t maxClicksPerQuery = 0;
  int64_t maxTrackerClicks = 0;
  int64_t maxExemplarBoxes = 0;
};

struct RuntimeInfo {
  std::string torchVersion;
  bool cudaAvailable = false;
  int cudaDeviceCount = 0;
  int64_t liveEmbeddingBytes = 0;  // see liveEmbeddingBytes() in engine.h
  InputLimits limits;
};

RuntimeInfo runtimeInfo();

}  // namespace sam3
