#include "executor.h"

#include <c10/core/Device.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

namespace sam3 {

// Shared with the thread so the thread can outlive the Executor object (detached case).
struct Executor::State {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Task> queue;
  std::vector<Task> drainedCallbacks;
  bool closed = false;
  bool cancelled = false;
  bool exited = false;
  std::thread::id threadId;
  c10::Device device{c10::kCPU};
};

void Executor::runLoop(const std::shared_ptr<State>& state) {
  // Model calls never need autograd; InferenceMode also skips version counters.
  c10::InferenceMode inferenceMode;
  std::optional<c10::DeviceGuard> deviceGuard;
  std::optional<c10::StreamGuard> streamGuard;
  if (state->device.type() != c10::kCPU) {
    try {
      deviceGuard.emplace(state->device);
      c10::impl::VirtualGuardImpl guardImpl(state->device.type());
      c10::Stream stream = guardImpl.getStreamFromGlobalPool(state->device);
      streamGuard.emplace(stream);
    } catch (const std::exception& e) {
      // The device was validated before the thread started; if this still fails the tasks
      // report their own device errors.
      std::fprintf(stderr, "sam3: executor could not select %s: %s\n", state->device.str().c_str(),
                   e.what());
    }
  }
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(state->mutex);
      state->wake.wait(lock, [&] { return !state->queue.empty() || state->closed; });
      if (state->queue.empty()) break;
      task = std::move(state->queue.front());
      state->queue.pop_front();
    }
    try {
      task();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sam3: executor task threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "sam3: executor task threw a non-std exception\n");
    }
    // Destroy the task (and what it captured) before taking the next one.
    task = nullptr;
  }
  std::vector<Task> drained;
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    state->exited = true;
    drained.swap(state->drainedCallbacks);
  }
  for (Task& callback : drained) {
    try {
      callback();
    } catch (...) {
      std::fprintf(stderr, "sam3: executor drain callback threw\n");
    }
  }
}

Executor::Executor(const std::string& device) : device_(device), state_(std::make_shared<State>()) {
  state_->device = c10::Device(device);
  thread_ = std::thread([state = state_] { runLoop(state); });
  state_->threadId = thread_.get_id();
}

Executor::~Executor() {
  close(nullptr);
  if (!thread_.joinable()) return;
  if (onExecutorThread()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

bool Executor::submit(Task task) {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->closed) return false;
    state_->queue.push_back(std::move(task));
  }
  state_->wake.notify_one();
  return true;
}

void Executor::close(Task drained) {
  bool runNow = false;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->closed = true;
    if (state_->exited) {
      runNow = true;
    } else if (drained) {
      state_->drainedCallbacks.push_back(std::move(drained));
    }
  }
  state_->wake.notify_one();
  if (runNow && drained) drained();
}

void Executor::cancelAndJoin() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->closed = true;
    state_->cancelled = true;
  }
  state_->wake.notify_one();
  if (thread_.joinable() && !onExecutorThread()) thread_.join();
}

bool Executor::cancelled() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->cancelled;
}

bool Executor::onExecutorThread() const { return std::this_thread::get_id() == state_->threadId; }

}  // namespace sam3
