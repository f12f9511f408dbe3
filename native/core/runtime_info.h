// What the linked LibTorch offers (runtimeInfo() in src/native/types.ts). Light header.
#pragma once

#include <cstdint>
#include <string>

namespace sam3 {

struct RuntimeInfo {
  std::string torchVersion;
  bool cudaAvailable = false;
  int cudaDeviceCount = 0;
  int64_t liveEmbeddingBytes = 0;  // see liveEmbeddingBytes() in engine.h
};

RuntimeInfo runtimeInfo();

}  // namespace sam3
