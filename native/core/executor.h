// One thread per engine/device that owns every model call on it (ARCHITECTURE.md: "one
// executor thread (and CUDA stream) per device"). Light header: no LibTorch types.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace sam3 {

class Executor {
 public:
  using Task = std::function<void()>;

  // Starts the thread. On it: InferenceMode (no autograd) for its whole life, and for a CUDA
  // device the current device plus a stream of its own. `device` is normalized ("cpu",
  // "cuda:N") and already checked to exist.
  explicit Executor(const std::string& device);
  // Closes (running everything already queued) and joins; if the last owner lets go on the
  // executor thread itself, the thread is detached and ends after its current task.
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues a task (FIFO). Returns false, without queuing, once close() or cancel() was called.
  // A task must not throw; the engine's tasks report failures through their own callbacks.
  bool submit(Task task);

  // Stops accepting tasks. `drained` runs on the executor thread after every task queued
  // before the call, then the thread ends. If the thread already ended, `drained` runs on the
  // caller's thread before close returns.
  void close(Task drained);

  // For process teardown: stops accepting tasks and marks queued ones cancelled (tasks check
  // cancelled() and fail fast), then waits for the thread. Must not be called on the thread.
  void cancelAndJoin();

  bool cancelled() const;
  bool onExecutorThread() const;
  // The device its tasks run on, as given ("cpu", "cuda:N"). On the executor thread a device
  // with streams has the executor's own stream current.
  const std::string& device() const { return device_; }

 private:
  struct State;
  static void runLoop(const std::shared_ptr<State>& state);

  std::string device_;
  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace sam3
