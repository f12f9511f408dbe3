// The video tracker's per-session state (TrackerSession) and its plain C++ request/result
// types: a port of transformers' Sam3TrackerVideoModel per-frame logic (docs/video-internals.md
// section 2, ../shared/TRACKER.md). Light header: the binding includes it without LibTorch.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace sam3 {

class Bundle;
class Executor;

struct TrackerOptions {
  int64_t numFrames = 0;  // T: frame indices are 0 .. T - 1
  int64_t width = 0;      // original frame size, pixels: the size of every frame and mask
  int64_t height = 0;
  // Non-conditioning frames kept per object; the least recently written is evicted first.
  int64_t memoryFrames = 64;
};

// Clicks and an optional box for one object on one frame (the reference's add_point_inputs).
struct TrackerPrompt {
  int64_t frameIndex = 0;
  int64_t objId = 0;
  // JS numbers as they are: pixels are computed in double and rounded once.
  std::vector<double> points;        // 2 per click: x, y normalized to [0, 1]
  std::vector<int32_t> pointLabels;  // one per click: 1 positive, 0 negative
  std::vector<double> box;           // empty, or cx, cy, w, h normalized
  bool clearOld = true;              // replace this object's inputs on this frame, else append
};

struct TrackedObject {
  int64_t objId = 0;
  bool present = false;        // object score logit > 0
  float score = 0;             // predicted IoU of the chosen mask
  std::array<float, 4> box{};  // bounds of the binarized mask: cx, cy, w, h normalized
  std::string mask;            // COCO RLE counts at the session's width x height
};

struct TrackerFrame {
  int64_t frameIndex = 0;
  std::vector<TrackedObject> objects;  // in creation order
};

// Caller-owned pixels of one frame: width * height * 3 bytes, row-major RGB, valid and
// unchanged until the call's completion callback has run.
struct FrameRequest {
  const uint8_t* rgb = nullptr;
  size_t byteLength = 0;
};

// The most clicks one prompt takes (as kMaxClicksPerQuery for images).
constexpr size_t kMaxTrackerClicks = 64;
// The most frames a session may have (frame indices stay exact everywhere).
constexpr int64_t kMaxTrackerFrames = 10'000'000;

// One video's tracking state. Created by Engine::createTracker; every model call on it runs
// as an Engine task on the executor thread. The read-only accessors may be called from any
// thread: they describe the state as of the last completed task.
class TrackerSession {
 public:
  struct State;  // LibTorch tensors and the per-frame algorithm, tracker.cpp

  TrackerSession(uint64_t bundleId, const TrackerOptions& options);
  ~TrackerSession();
  TrackerSession(const TrackerSession&) = delete;
  TrackerSession& operator=(const TrackerSession&) = delete;

  const TrackerOptions& options() const { return options_; }
  uint64_t bundleId() const { return bundleId_; }

  std::vector<int64_t> objectIds() const;
  // Frames holding a conditioning output of any object, ascending.
  std::vector<int64_t> promptFrames() const;
  // Exact bytes of the tensors held (memories, pointers, masks, the cached frame features).
  int64_t byteSize() const;
  // Frees the state now, or as soon as the running task ends; later tasks fail with
  // SESSION_CLOSED. Idempotent.
  void release();
  bool released() const;

  // Executor thread only, through Engine (one task each). `times` receives stage times.
  // addPrompt: the reference's add_point_inputs then forward(frame, reverse=false).
  TrackerFrame addPrompt(Bundle& bundle, const Executor& executor, const FrameRequest& frame,
                         const TrackerPrompt& prompt, std::map<std::string, double>& times);
  // forward(frameIndex, reverse).
  TrackerFrame step(Bundle& bundle, const Executor& executor, const FrameRequest& frame,
                    int64_t frameIndex, bool reverse, std::map<std::string, double>& times);
  // False when there is no such object.
  bool removeObject(int64_t objId);
  // Clears every object (the cached frame features stay); returns how many there were.
  int64_t reset();

 private:
  class Task;
  // Under mutex_.
  void freeLocked();
  void publishLocked();

  const uint64_t bundleId_;
  const TrackerOptions options_;

  mutable std::mutex mutex_;  // guards everything below
  bool closed_ = false;
  bool busy_ = false;  // a task is running on the executor thread
  std::unique_ptr<State> state_;
  // Published at the end of each task.
  std::vector<int64_t> objectIds_;
  std::vector<int64_t> promptFrames_;
  int64_t byteSize_ = 0;
};

// Bytes held by all tracker sessions of the process that are not yet freed.
int64_t liveTrackerBytes();

}  // namespace sam3
