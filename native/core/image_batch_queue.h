// Cross-request batching of encodeImage calls (Engine with ImageBatching maxSize > 1): images
// wait here, off the executor's queue, until one batch task takes them. Plain C++: no
// LibTorch.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "engine.h"

namespace sam3 {

// One encodeImage call waiting for a batch.
struct PendingImage {
  ImageRequest request;
  ImageMaps maps;
  Done<std::shared_ptr<ImageEmbedding>> done;
  CancelToken cancel;
  std::chrono::steady_clock::time_point queuedAt = std::chrono::steady_clock::now();
};

// At most one batch task is scheduled on the executor at a time; push() says when the caller
// must submit it, take() when it must run again.
class ImageBatchQueue {
 public:
  ImageBatchQueue(size_t maxSize, std::chrono::milliseconds window);

  // Queues an image. True when no batch task is scheduled: the caller must submit one (the
  // queue counts it as scheduled from now on).
  bool push(PendingImage image);

  // On the batch task: waits until maxSize images are queued or the oldest has waited the
  // window, then takes up to maxSize, oldest first. `more` is set when images remain: the
  // task stays scheduled and must run again; otherwise it is no longer scheduled.
  std::vector<PendingImage> take(bool& more);

  // Takes everything queued and unschedules the task (its submission was refused).
  std::vector<PendingImage> drain();

 private:
  const size_t maxSize_;
  const std::chrono::milliseconds window_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<PendingImage> queue_;
  bool scheduled_ = false;
};

}  // namespace sam3
