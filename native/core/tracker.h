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
  // Concept tracking: mask NMS, hole filling and sprinkle removal as the official SAM3
  // (docs/video-concepts.md "Post-processing switch"); off = as transformers without kernels.
  bool officialPostprocess = true;
  // Most objects the session tracks (0: the manifest's max_num_objects); concept detections
  // beyond it are dropped, the lowest scores first, and counted in TrackerFrame::objectsDropped.
  int64_t maxObjects = 0;
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
  int64_t conceptId = 0;  // the text concept that found it; 0 for clicked objects
  bool present = false;   // object score logit > 0 (concepts: the mask is not empty)
  // Clicked objects: predicted IoU of the chosen mask. Concept objects: the detection score
  // (1.0 once refined by clicks).
  float score = 0;
  float trackerScore = 0;      // concept objects: the tracker's score on this frame
  std::array<float, 4> box{};  // bounds of the binarized mask: cx, cy, w, h normalized
  std::string mask;            // COCO RLE counts at the session's width x height
};

struct TrackerFrame {
  int64_t frameIndex = 0;
  // Clicked objects: all, in creation order. Concepts: those shown on the frame, by id.
  std::vector<TrackedObject> objects;
  int64_t objectsDropped = 0;  // new detections dropped on this frame by the object limit
};

// One text of a concept prompt: tokens as the text encoder takes them (context length L), and
// optional exemplar boxes drawn on the prompt frame (docs/video-concepts.md, "Exemplars").
struct ConceptText {
  std::string text;  // the same text twice is the same concept
  std::vector<int32_t> tokenIds;
  std::vector<int32_t> attentionMask;
  std::vector<float> boxes;        // normalized cx, cy, w, h per box
  std::vector<int32_t> boxLabels;  // 1 positive, 0 negative, one per box
};

// The most exemplar boxes one concept takes on one frame.
constexpr size_t kMaxExemplarBoxes = 32;

// Text prompts on one frame: each text becomes a concept, then the frame is detected and
// tracked (docs/video-concepts.md, operation 1).
struct ConceptPrompt {
  int64_t frameIndex = 0;
  std::vector<ConceptText> texts;
};

struct ConceptResult {
  std::vector<int64_t> conceptIds;  // one per text, in order
  TrackerFrame frame;
};

// One frame of a propagation (docs/video-concepts.md, operation 2).
struct StepRequest {
  int64_t frameIndex = 0;
  bool reverse = false;
  int64_t hotstartDelay = -1;  // concepts: frames outputs are held back; -1: the manifest's
  bool runStart = false;       // first frame of a run: drops what an earlier run left held
  bool runEnd = false;         // last frame of a run: every held frame is emitted
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
  // The concept of each object of objectIds() (0: clicked).
  std::vector<int64_t> objectConcepts() const;
  // Frames holding a conditioning output of any object, ascending.
  std::vector<int64_t> promptFrames() const;
  // Exact bytes of the tensors held (memories, pointers, masks, the cached frame features).
  int64_t byteSize() const;
  // Frees the state now, or as soon as the running task ends; later tasks fail with
  // SESSION_CLOSED. Idempotent.
  void release();
  bool released() const;

  // Executor thread only, through Engine (one task each). `times` receives stage times.
  // addPrompt: the reference's add_point_inputs then forward(frame, reverse=false); in a
  // session tracking concepts, the refinement of an existing object (operation 3).
  TrackerFrame addPrompt(Bundle& bundle, const Executor& executor, const FrameRequest& frame,
                         const TrackerPrompt& prompt, std::map<std::string, double>& times);
  // Concept tracking starts or grows (operation 1).
  ConceptResult addConcept(Bundle& bundle, const Executor& executor, const FrameRequest& frame,
                           const ConceptPrompt& prompt, std::map<std::string, double>& times);
  // Clicked objects: forward(frameIndex, reverse), one frame out. Concepts: one det-track
  // step; the frames it emits (none while they are held back for hotstart).
  std::vector<TrackerFrame> step(Bundle& bundle, const Executor& executor,
                                 const FrameRequest& frame, const StepRequest& request,
                                 std::map<std::string, double>& times);
  // False when there is no such object.
  bool removeObject(int64_t objId);
  // Removes a concept and its objects; the ids removed (BAD_INPUT for an unknown concept).
  std::vector<int64_t> removeConcept(int64_t conceptId);
  // Clears every object and concept (the cached frame features stay); returns how many
  // objects there were.
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
  std::vector<int64_t> objectConcepts_;
  std::vector<int64_t> promptFrames_;
  int64_t byteSize_ = 0;
};

// Bytes held by all tracker sessions of the process that are not yet freed.
int64_t liveTrackerBytes();

}  // namespace sam3
