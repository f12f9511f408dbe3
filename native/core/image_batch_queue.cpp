#include "image_batch_queue.h"

#include <algorithm>
#include <utility>

namespace sam3 {

ImageBatchQueue::ImageBatchQueue(size_t maxSize, std::chrono::milliseconds window)
    : maxSize_(std::max<size_t>(1, maxSize)), window_(window) {}

bool ImageBatchQueue::push(PendingImage image) {
  bool mustSchedule = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(image));
    mustSchedule = !scheduled_;
    scheduled_ = true;
  }
  arrived_.notify_one();
  return mustSchedule;
}

std::vector<PendingImage> ImageBatchQueue::take(bool& more) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!queue_.empty()) {
    const auto deadline = queue_.front().queuedAt + window_;
    arrived_.wait_until(lock, deadline, [&] { return queue_.size() >= maxSize_; });
  }
  const size_t count = std::min(maxSize_, queue_.size());
  std::vector<PendingImage> batch;
  batch.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  more = !queue_.empty();
  scheduled_ = more;
  return batch;
}

std::vector<PendingImage> ImageBatchQueue::drain() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<PendingImage> all;
  all.reserve(queue_.size());
  for (PendingImage& image : queue_) all.push_back(std::move(image));
  queue_.clear();
  scheduled_ = false;
  return all;
}

}  // namespace sam3
