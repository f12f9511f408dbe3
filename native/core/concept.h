// Concept tracking (text prompts in video): a port of transformers' Sam3VideoModel per-frame
// logic on top of the point tracker's state (docs/video-concepts.md). Internal to native/core.
#pragma once

#include <cstdint>
#include <vector>

#include "tracker_state.h"

namespace sam3::tracking {

// Operation 1: the texts become concepts (the same text twice is one concept), then one
// det-track step on the prompt's frame, emitted at once.
ConceptResult addConcepts(Context& c, const FrameRequest& frame, const ConceptPrompt& prompt);
// Operation 2: one det-track step; the frames the hotstart buffer lets out.
std::vector<TrackerFrame> detTrackStep(Context& c, const FrameRequest& frame,
                                       const StepRequest& request);
// Operation 3, after the tracker's forward on the refined object's frame: its score becomes
// 1.0 and every object's output of that forward is post-processed.
TrackerFrame refinedFrame(Context& c, int64_t frame, int64_t objId, const FrameLogits& logits);
// Sam3VideoInferenceSession.remove_object (operation 4); false when there is no such object.
bool removeTrackedObject(State& s, int64_t objId);
// Operation 5: the ids of the objects removed with the concept.
std::vector<int64_t> removeConcept(State& s, int64_t conceptId);
// reset_state() for the concept metadata (operation 6); object ids go on.
void resetConcepts(State& s);

}  // namespace sam3::tracking
