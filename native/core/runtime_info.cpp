#include "runtime_info.h"

#include <ATen/DeviceAccelerator.h>
#include <c10/core/Device.h>
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

std::optional<DeviceMemory> deviceMemory(const std::string& device) {
  if (device.rfind("cuda:", 0) != 0 || !torch::cuda::is_available()) return std::nullopt;
  const c10::Device parsed(device);
  if (!parsed.has_index() || parsed.index() >= static_cast<int>(torch::cuda::device_count())) {
    return std::nullopt;
  }
  // The device-generic allocator interface: no link against the CUDA libraries needed.
  const auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(parsed.index());
  constexpr auto kAll = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  DeviceMemory memory;
  memory.allocatedBytes = stats.allocated_bytes[kAll].current;
  memory.reservedBytes = stats.reserved_bytes[kAll].current;
  memory.peakAllocatedBytes = stats.allocated_bytes[kAll].peak;
  return memory;
}

}  // namespace sam3
