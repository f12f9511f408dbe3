// What the linked LibTorch offers (runtimeInfo() in src/native/types.ts). Light header.
#pragma once

#include <cstdint>
#include <optional>
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

// What the caching allocator of one accelerator device holds, bytes.
struct DeviceMemory {
  int64_t allocatedBytes = 0;  // in tensors now
  int64_t reservedBytes = 0;   // taken from the device by the allocator (allocated + cached)
  int64_t peakAllocatedBytes = 0;
};

// The allocator figures of `device` ("cuda:N"); nullopt for "cpu" (the host has no such
// allocator) and when CUDA is not usable. Thread-safe: the allocator locks its own state.
std::optional<DeviceMemory> deviceMemory(const std::string& device);

}  // namespace sam3
