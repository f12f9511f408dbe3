#include "host_memory.h"

#include <cstdlib>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace sam3 {

namespace {
// Blocks of at least this size are mmapped and unmapped on free.
constexpr int kMmapThresholdBytes = 1 << 20;
}  // namespace

void useFixedMmapThreshold() {
  static std::once_flag once;
  std::call_once(once, [] {
#if defined(__GLIBC__)
    if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) {
      mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes);
    }
#endif
  });
}

}  // namespace sam3
