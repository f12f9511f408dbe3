// The tracker session's state and the per-frame pieces the point tracker (tracker.cpp) and
// concept tracking (concept.cpp) share. Internal to native/core (includes ATen).
#pragma once

#include <ATen/ATen.h>

#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bundle.h"
#include "postprocess.h"
#include "tracker.h"

namespace sam3 {

namespace tracking {

[[noreturn]] void badInput(const std::string& message);

// One object's prompt on one frame as the decoder takes it: points in pixels of the R x R
// model input, labels 1/0 (clicks) and 2/3 (box corners).
struct FramePrompt {
  std::vector<float> xy;
  std::vector<int64_t> labels;
};

// What one frame's computation leaves for later frames of one object (the reference's
// store_output dict, without what no later frame reads).
struct StoredOutput {
  at::Tensor memory;       // [G*G, M] bfloat16, rounded as the reference stores it
  at::Tensor pointer;      // [C] float32
  at::Tensor lowResMasks;  // [4G, 4G] float32 logits, conditioning outputs only (reused output)
  float scoreLogit = 0;
  float iou = 0;
  uint64_t written = 0;  // write sequence number: eviction order of non-conditioning outputs
};

int64_t bytesOf(const at::Tensor& tensor);
int64_t bytesOf(const StoredOutput& out);

struct ObjectState {
  int64_t id = 0;
  int64_t conceptId = 0;                   // 0: created by clicks
  std::map<int64_t, FramePrompt> prompts;  // point_inputs_per_obj
  // mask_inputs_per_obj: [1, 1, 4G, 4G] float32 0/1 (a detection entering the tracker)
  std::map<int64_t, at::Tensor> maskInputs;
  // cond_frame_outputs, kept for the session's life; condOrder is the reference dict's
  // insertion order (it breaks ties in the conditioning-frame selection).
  std::map<int64_t, StoredOutput> cond;
  std::vector<int64_t> condOrder;
  std::map<int64_t, StoredOutput> nonCond;  // non_cond_frame_outputs, at most memoryFrames
  std::set<int64_t> framesTracked;          // frames_tracked_per_obj (keys only are read)
};

// A text concept: its features for the detector, computed once (prompt_embeddings).
// Exemplar boxes of a concept on one frame, as the detector takes them.
struct Exemplars {
  std::vector<float> boxes;        // normalized cx, cy, w, h per box
  std::vector<int64_t> boxLabels;  // 1 positive, 0 negative
};

struct Concept {
  int64_t id = 0;
  std::string text;
  at::Tensor features;  // [1, L, D]
  at::Tensor mask;      // [1, L] int64
  // The geometric prompt of each frame it was prompted on with boxes (official SAM3's
  // per_frame_geometric_prompt): the detector sees them on that frame only.
  std::map<int64_t, Exemplars> exemplars;
};

// One det-track step's output, held back for hotstart until it is emitted (the reference's
// hotstart_buffer holds Sam3VideoSegmentationOutput the same way).
struct HeldFrame {
  int64_t frameIndex = 0;
  std::vector<int64_t> ids;                // obj_id_to_mask's keys, ascending
  std::vector<at::Tensor> lowRes;          // their low-res logits [4G, 4G], CPU float32
  std::map<int64_t, float> scores;         // obj_id_to_score
  std::map<int64_t, float> trackerScores;  // obj_id_to_tracker_score of the frame
  std::map<int64_t, int64_t> concepts;     // concept of each id
  std::set<int64_t> suppressed;            // suppressed_obj_ids of the frame
  int64_t dropped = 0;                     // detections dropped by the object limit
};

// Sam3VideoInferenceSession's detection-tracking metadata (docs/video-concepts.md).
struct ConceptState {
  std::vector<Concept> concepts;  // prompt order = concept id order
  int64_t nextConceptId = 1;
  std::map<int64_t, float> score;                           // obj_id_to_score
  std::map<int64_t, int64_t> lastOccluded;                  // obj_id_to_last_occluded
  std::map<int64_t, int64_t> firstFrame;                    // obj_first_frame_idx
  std::map<int64_t, std::vector<int64_t>> unmatchedFrames;  // unmatched_frame_inds
  std::map<int64_t, int64_t> keepAlive;                     // trk_keep_alive
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> overlapFrames;
  std::set<int64_t> removed;                        // removed_obj_ids (hotstart)
  std::map<int64_t, std::set<int64_t>> suppressed;  // suppressed_obj_ids per frame
  std::set<int64_t> hidden;                         // hotstart_removed_obj_ids
  std::set<int64_t> promptFrames;                   // frames a concept was prompted on
  std::deque<HeldFrame> held;

  bool active() const { return !concepts.empty(); }
};

}  // namespace tracking

struct TrackerSession::State {
  std::vector<tracking::ObjectState> objects;  // creation order = the reference's object order
  std::vector<int64_t> withNewInputs;
  uint64_t writes = 0;
  int64_t maxObjId = 0;  // the highest object id so far (ids are never reused)
  // The vision cache (max_vision_features_cache_size = 1): tracker_fpn_0..2 of one frame, and
  // the detector's fpn_0..2 when concept tracking computed that frame.
  int64_t featuresFrame = -1;
  at::Tensor features[3];
  at::Tensor detectorFeatures[3];
  tracking::ConceptState concepts;

  int64_t bytes() const;
  tracking::ObjectState* find(int64_t objId);
  size_t indexOf(int64_t objId) const;  // objects.size() when absent
};

namespace tracking {

using State = TrackerSession::State;

// The session, the bundle and the tracker configuration one operation works with.
struct Context {
  State& state;
  Bundle& bundle;
  const TrackerSpec& spec;
  const TrackerOptions& options;
  StageClock& clock;
};

void checkFrame(const TrackerOptions& options, const FrameRequest& frame, int64_t frameIndex);
// The prompt as add_point_inputs stores it (pixels of the R x R input, a box as two corners).
FramePrompt framePrompt(const TrackerPrompt& prompt, int64_t resolution);
// The frame's features (the cache of one frame); with `detector`, the detector's too.
void ensureFeatures(Context& c, const FrameRequest& frame, int64_t frameIndex, bool detector);

// Every object's output of one forward, in State::objects order (before any removal).
struct FrameLogits {
  std::vector<at::Tensor> lowRes;  // [4G, 4G] float32 logits
  std::vector<float> scoreLogit;
  std::vector<float> iou;
};

// The tracker's forward(frame, reverse) (reference L1797) over all objects; with
// `encodeMemory` false, outputs are stored without memories (run_mem_encoder=False).
FrameLogits forwardObjects(Context& c, const FrameRequest& frame, int64_t frameIndex, bool reverse,
                           bool encodeMemory);
// Memories of the objects at `rows` (indices into State::objects) from their masks [N, 1, S,
// S] and score logits [N, 1], written to their conditioning and non-conditioning outputs of
// the frame (where present).
void encodeMemories(Context& c, int64_t frameIndex, const std::vector<size_t>& rows,
                    const at::Tensor& masks, const at::Tensor& scoreLogits, bool binarize);
// Drops an object and its pending inputs; false when there is none.
bool eraseObject(State& s, int64_t objId);

}  // namespace tracking
}  // namespace sam3
