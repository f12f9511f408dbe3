#include "runtime_info.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include "engine.h"
#include "tracker.h"

namespace sam3 {

RuntimeInfo runtimeInfo() {
  RuntimeInfo info;
  info.torchVersion = TORCH_VERSION;
  info.cudaAvailable = torch::cuda::is_available();
  info.cudaDeviceCount = info.cudaAvailable ? static_cast<int>(torch::cuda::device_count()) : 0;
  info.liveEmbeddingBytes = liveEmbeddingBytes();
  info.limits.maxImageSide = kMaxImageSide;
  info.limits.maxClicksPerQuery = static_cast<int64_t>(kMaxClicksPerQuery);
  info.limits.maxTrackerClicks = static_cast<int64_t>(kMaxTrackerClicks);
  info.limits.maxExemplarBoxes = static_cast<int64_t>(kMaxExemplarBoxes);
  return info;
}

}  // namespace sam3
