#include "concept.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "errors.h"
#include "mask_postprocess.h"
#include "rle.h"

// Line numbers cite transformers 5.17: M<n> modeling_sam3_video.py, P<n>
// processing_sam3_video.py (docs/video-concepts.md).
namespace sam3::tracking {

namespace {

// Thresholds are compared in float32, as torch compares a float32 tensor with a Python float.
float f32(double value) { return static_cast<float>(value); }

const ConceptSpec& conceptSpecOf(const Bundle& bundle) {
  if (!bundle.hasConcept()) {
    badInput(
        "text prompts in video are unavailable: the bundle has no concept-tracking modules "
        "(bundle format 3); export it again with tools/export_sam3.py");
  }
  return *bundle.manifest().concept;
}

int64_t objectLimit(const Context& c, const ConceptSpec& k) {
  if (c.options.maxObjects > 0) return std::min(c.options.maxObjects, k.maxNumObjects);
  return k.maxNumObjects;
}

// Contiguous CPU float32 copy of [N, S, S] masks.
at::Tensor onHost(const at::Tensor& masks) {
  return masks.to(at::kCPU, at::kFloat).contiguous().clone();
}

const float* row(const at::Tensor& masks, int64_t n) {
  return masks.data_ptr<float>() + n * masks.size(1) * masks.size(2);
}

bool anyPositive(const float* mask, int64_t pixels) {
  for (int64_t p = 0; p < pixels; ++p) {
    if (mask[p] > 0) return true;
  }
  return false;
}

// The merged detections of every concept on one frame (run_detection M567 and
// _merge_detections_from_prompts M1551).
struct Detections {
  at::Tensor masks;  // [N, S, S] logits, CPU float32
  std::vector<float> scores;
  std::vector<int64_t> concept;  // concept id of each
  int64_t size() const { return static_cast<int64_t>(scores.size()); }
};

// The detector's box inputs on `frame`: each concept's exemplars there, padded (label -10,
// masked out) to the longest list; one padding box when no concept has any, as text alone
// still runs the geometry encoder (docs/bundle-format.md).
std::pair<at::Tensor, at::Tensor> exemplarInputs(const std::vector<Concept>& concepts,
                                                 int64_t frame) {
  const int64_t K = static_cast<int64_t>(concepts.size());
  std::vector<const Exemplars*> onFrame(concepts.size(), nullptr);
  size_t most = 1;
  for (size_t q = 0; q < concepts.size(); ++q) {
    auto found = concepts[q].exemplars.find(frame);
    if (found == concepts[q].exemplars.end()) continue;
    onFrame[q] = &found->second;
    most = std::max(most, found->second.boxLabels.size());
  }
  const int64_t NB = static_cast<int64_t>(most);
  at::Tensor boxes = at::zeros({K, NB, 4}, at::kFloat);
  at::Tensor labels = at::full({K, NB}, -10, at::kLong);
  auto boxData = boxes.accessor<float, 3>();
  auto labelData = labels.accessor<int64_t, 2>();
  for (size_t q = 0; q < concepts.size(); ++q) {
    if (onFrame[q] == nullptr) continue;
    const Exemplars& e = *onFrame[q];
    for (size_t b = 0; b < e.boxLabels.size(); ++b) {
      for (size_t v = 0; v < 4; ++v) boxData[q][b][v] = e.boxes[4 * b + v];
      labelData[q][b] = e.boxLabels[b];
    }
  }
  return {boxes, labels};
}

Detections detect(Context& c, const ConceptSpec& k, int64_t frame) {
  State& s = c.state;
  const std::vector<Concept>& concepts = s.concepts.concepts;
  const int64_t K = static_cast<int64_t>(concepts.size());
  std::vector<at::Tensor> features, masks;
  for (const Concept& concept : concepts) {
    features.push_back(concept.features);
    masks.push_back(concept.mask);
  }
  auto [boxes, boxLabels] = exemplarInputs(concepts, frame);
  const int64_t NB = boxes.size(1);
  NamedTensors outputs = c.bundle.call(ModuleKind::kDetector,
                                       {{"fpn_0", s.detectorFeatures[0]},
                                        {"fpn_1", s.detectorFeatures[1]},
                                        {"fpn_2", s.detectorFeatures[2]},
                                        {"text_features", at::cat(features, 0)},
                                        {"text_mask", at::cat(masks, 0)},
                                        {"boxes", boxes},
                                        {"box_labels", boxLabels}},
                                       {{"B", K}, {"NB", NB}});
  c.clock.lap("detector");
  at::Tensor probs = (at::sigmoid(outputs.at("pred_logits").to(at::kFloat)) *
                      at::sigmoid(outputs.at("presence_logits").to(at::kFloat)))
                         .to(at::kCPU)
                         .contiguous();
  at::Tensor predMasks = outputs.at("pred_masks").to(at::kCPU, at::kFloat).contiguous();
  const int64_t Q = probs.size(1), S = predMasks.size(2), pixels = S * S;
  const float threshold = f32(k.scoreThresholdDetection);

  Detections out;
  std::vector<at::Tensor> kept;
  for (int64_t b = 0; b < K; ++b) {
    std::vector<float> rowProbs(probs[b].data_ptr<float>(), probs[b].data_ptr<float>() + Q);
    const float* rowMasks = predMasks[b].data_ptr<float>();
    if (c.options.officialPostprocess && k.detNmsThresh > 0) {
      std::vector<bool> keep =
          nmsMasks(rowProbs, rowMasks, pixels, k.scoreThresholdDetection, k.detNmsThresh);
      for (int64_t q = 0; q < Q; ++q) {
        if (!keep[static_cast<size_t>(q)]) rowProbs[static_cast<size_t>(q)] = 0;
      }
    }
    for (int64_t q = 0; q < Q; ++q) {
      if (!(rowProbs[static_cast<size_t>(q)] > threshold)) continue;
      kept.push_back(predMasks[b][q]);
      out.scores.push_back(rowProbs[static_cast<size_t>(q)]);
      out.concept.push_back(concepts[static_cast<size_t>(b)].id);
    }
  }
  out.masks = kept.empty() ? at::zeros({0, S, S}, at::kFloat) : at::stack(kept, 0).contiguous();
  c.clock.lap("postprocess");
  return out;
}

void fillHoles(const Context& c, const ConceptSpec& k, at::Tensor& masks) {
  if (!c.options.officialPostprocess) return;
  const int64_t S = masks.size(1);
  for (int64_t n = 0; n < masks.size(0); ++n) {
    fillHolesInMaskScores(masks.data_ptr<float>() + n * S * S, S, S, k.fillHoleArea);
  }
}

// _associate_det_trk (M682).
struct Association {
  std::vector<int64_t> newDetections;  // indices into Detections
  std::vector<int64_t> unmatchedTracks;
  std::vector<std::vector<int64_t>> detectionToTracks;  // per detection, matched track ids
  std::map<int64_t, int64_t> trackToHighConfDetection;
  std::vector<int64_t> emptyTracks;
};

Association associate(const ConceptSpec& k, const Detections& dets, const at::Tensor& tracks,
                      const std::vector<int64_t>& trackIds,
                      const std::vector<int64_t>& trackConcept) {
  Association a;
  const int64_t N = dets.size(), M = static_cast<int64_t>(trackIds.size());
  const int64_t pixels = tracks.size(1) * tracks.size(2);
  std::vector<bool> nonEmpty(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m)
    nonEmpty[static_cast<size_t>(m)] = anyPositive(row(tracks, m), pixels);
  a.detectionToTracks.resize(static_cast<size_t>(N));
  if (M == 0) {
    // Every detection is new, whatever its score (M739).
    for (int64_t d = 0; d < N; ++d) a.newDetections.push_back(d);
    return a;
  }
  if (N == 0) {
    for (int64_t m = 0; m < M; ++m) {
      (nonEmpty[static_cast<size_t>(m)] ? a.unmatchedTracks : a.emptyTracks)
          .push_back(trackIds[static_cast<size_t>(m)]);
    }
    return a;
  }
  std::vector<float> ious =
      maskIou(dets.masks.data_ptr<float>(), N, tracks.data_ptr<float>(), M, pixels);
  for (int64_t d = 0; d < N; ++d) {
    for (int64_t m = 0; m < M; ++m) {
      if (dets.concept[static_cast<size_t>(d)] != trackConcept[static_cast<size_t>(m)]) {
        ious[static_cast<size_t>(d * M + m)] = 0;
      }
    }
  }
  auto iou = [&](int64_t d, int64_t m) { return ious[static_cast<size_t>(d * M + m)]; };
  for (int64_t m = 0; m < M; ++m) {
    bool matched = false;
    for (int64_t d = 0; d < N; ++d) matched = matched || iou(d, m) >= f32(k.trkAssocIouThresh);
    if (!nonEmpty[static_cast<size_t>(m)]) {
      a.emptyTracks.push_back(trackIds[static_cast<size_t>(m)]);
    } else if (!matched) {
      a.unmatchedTracks.push_back(trackIds[static_cast<size_t>(m)]);
    }
  }
  for (int64_t d = 0; d < N; ++d) {
    bool matchesAny = false;
    int64_t best = 0;
    for (int64_t m = 0; m < M; ++m) {
      if (iou(d, m) >= f32(k.assocIouThresh)) {
        matchesAny = true;
        a.detectionToTracks[static_cast<size_t>(d)].push_back(trackIds[static_cast<size_t>(m)]);
      }
      if (iou(d, m) > iou(d, best)) best = m;  // argmax: the first maximum
    }
    const float score = dets.scores[static_cast<size_t>(d)];
    const bool isNew = score >= f32(k.newDetThresh) && !matchesAny;
    if (isNew) a.newDetections.push_back(d);
    if (score >= f32(k.highConfThresh) && !isNew && iou(d, best) >= f32(k.highIouThresh)) {
      a.trackToHighConfDetection[trackIds[static_cast<size_t>(best)]] = d;
    }
  }
  return a;
}

// _process_hotstart (M803) with the step's delay. Returns the ids newly removed.
std::set<int64_t> processHotstart(ConceptState& m, const ConceptSpec& k, int64_t frame,
                                  bool reverse, int64_t delay, const Association& a,
                                  const std::vector<int64_t>& newIds) {
  std::set<int64_t> newlyRemoved;
  const int64_t diff = reverse ? frame + delay : frame - delay;
  auto withinHotstart = [&](int64_t objId) {
    const int64_t first = m.firstFrame.at(objId);
    return reverse ? first < diff : first > diff;
  };
  for (int64_t objId : newIds) {
    m.firstFrame.emplace(objId, frame);
    m.keepAlive[objId] = k.initTrkKeepAlive;
  }
  std::set<int64_t> matched;
  for (const auto& tracks : a.detectionToTracks) matched.insert(tracks.begin(), tracks.end());
  for (int64_t objId : matched) {
    m.keepAlive[objId] = std::min(k.maxTrkKeepAlive, m.keepAlive[objId] + 1);
  }
  for (int64_t objId : a.unmatchedTracks) {
    m.unmatchedFrames[objId].push_back(frame);
    m.keepAlive[objId] = std::max(k.minTrkKeepAlive, m.keepAlive[objId] - 1);
  }
  if (k.decreaseTrkKeepAliveForEmptyMasklets) {
    for (int64_t objId : a.emptyTracks) {
      m.keepAlive[objId] = std::max(k.minTrkKeepAlive, m.keepAlive[objId] - 1);
    }
  }
  std::set<int64_t>& suppressed = m.suppressed[frame];
  auto gone = [&](int64_t objId) { return m.removed.count(objId) || newlyRemoved.count(objId); };
  for (const auto& [objId, frames] : m.unmatchedFrames) {
    if (gone(objId)) continue;
    if (static_cast<int64_t>(frames.size()) >= k.hotstartUnmatchThresh && withinHotstart(objId)) {
      newlyRemoved.insert(objId);
    }
    if (m.keepAlive[objId] <= 0 && !k.suppressUnmatchedOnlyWithinHotstart && !gone(objId)) {
      suppressed.insert(objId);
    }
  }
  if (suppressed.empty()) m.suppressed.erase(frame);
  for (const auto& tracks : a.detectionToTracks) {
    if (tracks.size() < 2) continue;
    // The earliest to appear (the latest in reverse); the first such in list order.
    int64_t first = tracks.front();
    for (int64_t objId : tracks) {
      const int64_t t = m.firstFrame.at(objId), best = m.firstFrame.at(first);
      if (reverse ? t > best : t < best) first = objId;
    }
    for (int64_t objId : tracks) {
      if (objId != first) m.overlapFrames[{first, objId}].push_back(frame);
    }
  }
  for (const auto& [pair, frames] : m.overlapFrames) {
    const int64_t objId = pair.second;
    if (gone(objId)) continue;
    if (withinHotstart(objId) && static_cast<int64_t>(frames.size()) >= k.hotstartDupThresh) {
      newlyRemoved.insert(objId);
    }
  }
  m.removed.insert(newlyRemoved.begin(), newlyRemoved.end());
  return newlyRemoved;
}

// Groups of rows (indices) sharing a concept, in ascending concept order.
std::map<int64_t, std::vector<int64_t>> byConcept(const std::vector<int64_t>& concepts) {
  std::map<int64_t, std::vector<int64_t>> groups;
  for (size_t i = 0; i < concepts.size(); ++i)
    groups[concepts[i]].push_back(static_cast<int64_t>(i));
  return groups;
}

// _suppress_overlapping_based_on_recent_occlusion (M1028): suppressed tracks' masks become
// -10 in place; returns the new obj_id_to_last_occluded.
std::map<int64_t, int64_t> suppressRecentlyOccluded(const ConceptState& m, const ConceptSpec& k,
                                                    int64_t frame, bool reverse, at::Tensor& tracks,
                                                    const std::vector<int64_t>& ids,
                                                    const std::vector<int64_t>& concepts,
                                                    const std::set<int64_t>& newlyRemoved) {
  constexpr int64_t kNeverOccluded = -1, kAlwaysOccluded = 100000;
  const int64_t N = static_cast<int64_t>(ids.size()), pixels = tracks.size(1) * tracks.size(2);
  std::vector<int64_t> last(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    auto found = m.lastOccluded.find(ids[static_cast<size_t>(i)]);
    last[static_cast<size_t>(i)] = found != m.lastOccluded.end() ? found->second
                                   : newlyRemoved.count(ids[static_cast<size_t>(i)])
                                       ? kAlwaysOccluded
                                       : kNeverOccluded;
  }
  std::vector<bool> suppress(static_cast<size_t>(N), false);
  auto later = [reverse](int64_t x, int64_t y) { return reverse ? x < y : x > y; };
  for (const auto& [concept, members] : byConcept(concepts)) {
    const int64_t G = static_cast<int64_t>(members.size());
    if (G <= 1) continue;
    at::Tensor group = tracks.index_select(0, at::tensor(members, at::kLong)).contiguous();
    std::vector<float> ious =
        maskIou(group.data_ptr<float>(), G, group.data_ptr<float>(), G, pixels);
    for (int64_t i = 0; i < G; ++i) {
      for (int64_t j = i + 1; j < G; ++j) {
        if (!(ious[static_cast<size_t>(i * G + j)] >=
              f32(k.suppressOverlappingBasedOnRecentOcclusionThreshold))) {
          continue;
        }
        const int64_t li = last[static_cast<size_t>(members[static_cast<size_t>(i)])];
        const int64_t lj = last[static_cast<size_t>(members[static_cast<size_t>(j)])];
        if (later(li, lj) && lj > -1)
          suppress[static_cast<size_t>(members[static_cast<size_t>(i)])] = true;
        if (later(lj, li) && li > -1)
          suppress[static_cast<size_t>(members[static_cast<size_t>(j)])] = true;
      }
    }
  }
  std::map<int64_t, int64_t> lastOccluded;
  for (int64_t i = 0; i < N; ++i) {
    float* mask = tracks.data_ptr<float>() + i * pixels;
    const bool occluded = !anyPositive(mask, pixels);
    lastOccluded[ids[static_cast<size_t>(i)]] =
        occluded || suppress[static_cast<size_t>(i)] ? frame : last[static_cast<size_t>(i)];
    if (suppress[static_cast<size_t>(i)]) std::fill(mask, mask + pixels, -10.0f);
  }
  return lastOccluded;
}

// _suppress_object_pw_area_shrinkage (M1146) on a copy, per concept: a mask that keeps less
// than 30% of its area where it wins the pixel-wise argmax is clamped to <= -10.
at::Tensor suppressShrunk(const at::Tensor& masks, const std::vector<int64_t>& concepts) {
  at::Tensor out = masks.clone();
  for (const auto& [concept, members] : byConcept(concepts)) {
    if (members.size() <= 1) continue;
    at::Tensor index = at::tensor(members, at::kLong);
    at::Tensor group = masks.index_select(0, index);  // [G, S, S]
    at::Tensor winner = group.argmax(0, /*keepdim=*/true);
    at::Tensor own = at::arange(group.size(0), at::kLong).view({-1, 1, 1});
    at::Tensor alone = at::where(winner == own, group, group.clamp_max(-10.0));
    at::Tensor before = (group > 0).sum({1, 2}).to(at::kFloat).clamp_min(1.0);
    at::Tensor after = (alone > 0).sum({1, 2}).to(at::kFloat);
    at::Tensor keep = (after / before) >= 0.3f;
    at::Tensor result = at::where(keep.view({-1, 1, 1}), group, group.clamp_max(-10.0));
    out.index_copy_(0, index, result);
  }
  return out;
}

// One det-track step (_det_track_one_frame M1598 and forward M1695) with the hotstart rules of
// `delay`; the frame's output, to be held or emitted.
HeldFrame detTrackOne(Context& c, const ConceptSpec& k, const FrameRequest& frameRequest,
                      int64_t frame, bool reverse, int64_t delay) {
  State& s = c.state;
  ConceptState& m = s.concepts;
  ensureFeatures(c, frameRequest, frame, /*detector=*/true);
  Detections dets = detect(c, k, frame);

  // Tracker propagation (M639) without memory encoding, then hole filling.
  std::vector<int64_t> ids, concepts;
  for (const ObjectState& object : s.objects) {
    ids.push_back(object.id);
    concepts.push_back(object.conceptId);
  }
  const int64_t N = static_cast<int64_t>(ids.size());
  const int64_t S = k.lowResMaskSize;
  at::Tensor tracks = at::zeros({0, S, S}, at::kFloat);
  FrameLogits logits;
  if (N > 0) {
    logits = forwardObjects(c, frameRequest, frame, reverse, /*encodeMemory=*/false);
    tracks = onHost(at::stack(logits.lowRes, 0));
    fillHoles(c, k, tracks);
  }
  const std::vector<float>& trackerLogits = logits.scoreLogit;

  // Planning (M1249).
  Association a = associate(k, dets, tracks, ids, concepts);
  HeldFrame out;
  out.frameIndex = frame;
  const int64_t limit = objectLimit(c, k);
  if (N + static_cast<int64_t>(a.newDetections.size()) > limit) {
    const int64_t room = std::max<int64_t>(0, limit - N);
    out.dropped = static_cast<int64_t>(a.newDetections.size()) - room;
    // torch.topk: the highest scores first (equal scores: the lower index first).
    std::stable_sort(a.newDetections.begin(), a.newDetections.end(), [&](int64_t x, int64_t y) {
      return dets.scores[static_cast<size_t>(x)] > dets.scores[static_cast<size_t>(y)];
    });
    a.newDetections.resize(static_cast<size_t>(room));
  }
  std::vector<int64_t> newIds;
  for (size_t i = 0; i < a.newDetections.size(); ++i)
    newIds.push_back(s.maxObjId + 1 + static_cast<int64_t>(i));
  const std::set<int64_t> newlyRemoved = processHotstart(m, k, frame, reverse, delay, a, newIds);

  // Periodic reconditioning (M949): objects confirmed by a confident detection.
  std::map<size_t, int64_t> reconditioned;  // row -> detection
  if (k.reconditionEveryNthFrame > 0 && frame % k.reconditionEveryNthFrame == 0) {
    for (const auto& [objId, det] : a.trackToHighConfDetection) {
      const size_t rowIndex = s.indexOf(objId);
      if (trackerLogits[rowIndex] <= f32(k.highConfThresh)) continue;
      reconditioned[rowIndex] = det;
    }
  }

  std::map<int64_t, int64_t> lastOccluded;
  if (N > 0) {
    if (k.suppressOverlappingBasedOnRecentOcclusionThreshold > 0) {
      lastOccluded =
          suppressRecentlyOccluded(m, k, frame, reverse, tracks, ids, concepts, newlyRemoved);
    }
    // _tracker_update_memories (M1178). The reference writes reconditioned masks through a
    // view of the tracker masks: with recondition_on_trk_masks they are the masks themselves.
    for (const auto& [rowIndex, det] : reconditioned) {
      if (!k.reconditionOnTrkMasks) {
        tracks[static_cast<int64_t>(rowIndex)].copy_((dets.masks[det] >= 0.5).to(at::kFloat));
      }
      // The frame becomes a conditioning frame of the object; its output (with the
      // propagation's own low-res masks, which a later visit reuses) moves there.
      ObjectState& object = s.objects[rowIndex];
      auto found = object.nonCond.find(frame);
      if (found != object.nonCond.end()) {
        if (object.cond.count(frame) == 0) object.condOrder.push_back(frame);
        found->second.lowResMasks = owned(logits.lowRes[rowIndex]);
        object.cond[frame] = std::move(found->second);
        object.nonCond.erase(found);
      }
    }
    at::Tensor memoryMasks = suppressShrunk(tracks, concepts);
    at::Tensor present = (memoryMasks > 0).flatten(1).any(1);
    at::Tensor scoreLogits = at::where(present, 10.0, -10.0).to(at::kFloat).view({N, 1});
    std::vector<size_t> rows(static_cast<size_t>(N));
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = i;
    encodeMemories(c, frame, rows, memoryMasks.unsqueeze(1), scoreLogits, /*binarize=*/false);
  }

  // Metadata (M1420-1445), then the outputs' scores.
  std::map<int64_t, float> trackerScores;
  for (size_t i = 0; i < newIds.size(); ++i) {
    const float score = dets.scores[static_cast<size_t>(a.newDetections[i])];
    m.score[newIds[i]] = score;
    trackerScores[newIds[i]] = score;
  }
  if (!newIds.empty()) s.maxObjId = newIds.back();
  for (int64_t objId : newlyRemoved) {
    m.score[objId] = -1e4f;
    trackerScores[objId] = -1e4f;
    lastOccluded.erase(objId);
  }
  m.lastOccluded = std::move(lastOccluded);
  if (N > 0) {
    at::Tensor sigmoid = at::sigmoid(at::tensor(trackerLogits, at::kFloat));
    for (int64_t i = 0; i < N; ++i)
      trackerScores[ids[static_cast<size_t>(i)]] = sigmoid[i].item<float>();
  }

  // Execution (M1470): new objects enter with their mask inputs, then one forward of all
  // objects with memories; hotstart removals leave.
  if (!newIds.empty()) {
    for (size_t i = 0; i < newIds.size(); ++i) {
      const int64_t det = a.newDetections[i];
      ObjectState object;
      object.id = newIds[i];
      object.conceptId = dets.concept[static_cast<size_t>(det)];
      object.maskInputs[frame] =
          (dets.masks[det] >= 0.5).to(at::kFloat).view({1, 1, S, S}).to(c.bundle.device());
      s.objects.push_back(std::move(object));
    }
    s.withNewInputs = newIds;
    forwardObjects(c, frameRequest, frame, reverse, /*encodeMemory=*/true);
  }
  for (int64_t objId : newlyRemoved) removeTrackedObject(s, objId);

  // build_outputs (M1500), with the ids before this frame's update (the official SAM3).
  std::map<int64_t, at::Tensor> masks;
  std::map<int64_t, int64_t> conceptOf;
  for (int64_t i = 0; i < N; ++i) {
    masks[ids[static_cast<size_t>(i)]] = tracks[i];
    conceptOf[ids[static_cast<size_t>(i)]] = concepts[static_cast<size_t>(i)];
  }
  if (!newIds.empty()) {
    at::Tensor index = at::tensor(a.newDetections, at::kLong);
    at::Tensor fresh = dets.masks.index_select(0, index).contiguous();
    fillHoles(c, k, fresh);
    for (size_t i = 0; i < newIds.size(); ++i) {
      masks[newIds[i]] = fresh[static_cast<int64_t>(i)];
      conceptOf[newIds[i]] = dets.concept[static_cast<size_t>(a.newDetections[i])];
    }
  }
  for (const auto& [rowIndex, det] : reconditioned) masks[ids[rowIndex]] = dets.masks[det];
  for (const auto& [objId, mask] : masks) {
    out.ids.push_back(objId);
    out.lowRes.push_back(mask.clone());
    out.scores[objId] = m.score.at(objId);
    out.trackerScores[objId] = trackerScores.count(objId) ? trackerScores.at(objId) : 0.0f;
    out.concepts[objId] = conceptOf.at(objId);
  }
  auto suppressed = m.suppressed.find(frame);
  if (suppressed != m.suppressed.end()) out.suppressed = suppressed->second;
  // Removed ids are hidden from every later output (docs/video-concepts.md).
  m.hidden.insert(m.removed.begin(), m.removed.end());
  return out;
}

// postprocess_outputs (P247) at emission: masks at the video size, empty and hidden objects
// dropped, then within each concept every pixel kept by the highest tracker score.
TrackerFrame emit(Context& c, const HeldFrame& held) {
  const ConceptState& m = c.state.concepts;
  const int64_t H = c.options.height, W = c.options.width;
  TrackerFrame frame;
  frame.frameIndex = held.frameIndex;
  frame.objectsDropped = held.dropped;
  if (held.ids.empty()) return frame;
  at::Tensor logits = at::stack(held.lowRes, 0).unsqueeze(0);  // [1, K, S, S]
  at::Tensor binary =
      at::upsample_bilinear2d(logits, {H, W}, /*align_corners=*/false).squeeze(0).gt(0);
  std::vector<int64_t> shown;
  for (size_t i = 0; i < held.ids.size(); ++i) {
    const int64_t objId = held.ids[i];
    if (held.suppressed.count(objId) || m.hidden.count(objId)) continue;
    if (!binary[static_cast<int64_t>(i)].any().item<bool>()) continue;
    shown.push_back(static_cast<int64_t>(i));
  }
  if (shown.empty()) return frame;
  at::Tensor kept = binary.index_select(0, at::tensor(shown, at::kLong));  // [K', H, W]
  std::vector<int64_t> concepts;
  std::vector<float> trackerScores;
  for (int64_t i : shown) {
    concepts.push_back(held.concepts.at(held.ids[static_cast<size_t>(i)]));
    trackerScores.push_back(held.trackerScores.at(held.ids[static_cast<size_t>(i)]));
  }
  if (shown.size() > 1) {
    at::Tensor scores = at::tensor(trackerScores, at::kFloat).view({-1, 1, 1});
    for (const auto& [concept, members] : byConcept(concepts)) {
      if (members.size() <= 1) continue;
      at::Tensor index = at::tensor(members, at::kLong);
      at::Tensor group = kept.index_select(0, index);
      at::Tensor valued =
          at::where(group, scores.index_select(0, index), at::zeros({1}, at::kFloat));
      at::Tensor winner = valued.argmax(0, /*keepdim=*/true);
      at::Tensor own = at::arange(static_cast<int64_t>(members.size()), at::kLong).view({-1, 1, 1});
      kept.index_copy_(0, index, group & (winner == own) & (valued > 0));
    }
  }
  c.clock.lap("postprocess");
  at::Tensor columnMajor = kept.transpose(1, 2).contiguous().to(at::kCPU, at::kByte);
  const size_t h = static_cast<size_t>(H), w = static_cast<size_t>(W);
  for (size_t j = 0; j < shown.size(); ++j) {
    const int64_t objId = held.ids[static_cast<size_t>(shown[j])];
    TrackedObject object;
    object.objId = objId;
    object.conceptId = concepts[j];
    object.score = held.scores.at(objId);
    object.trackerScore = trackerScores[j];
    MaskBounds bounds;
    object.mask = encodeRleColumnMajor(columnMajor[static_cast<int64_t>(j)].data_ptr<uint8_t>(), h,
                                       w, &bounds);
    object.present = !bounds.empty;
    object.box = normalizedBox(bounds, H, W);
    frame.objects.push_back(std::move(object));
  }
  c.clock.lap("rle");
  return frame;
}

// A text's exemplar boxes, checked; none when it has no boxes (the frame keeps any earlier).
std::optional<Exemplars> exemplarsOf(const ConceptText& text, const std::string& where) {
  if (text.boxes.size() != 4 * text.boxLabels.size()) {
    badInput(where + ": boxes must hold 4 numbers per box label");
  }
  if (text.boxLabels.size() > kMaxExemplarBoxes) {
    badInput(where + ": at most " + std::to_string(kMaxExemplarBoxes) + " exemplar boxes");
  }
  if (text.boxLabels.empty()) return std::nullopt;
  for (float v : text.boxes) {
    if (!std::isfinite(v) || v < 0 || v > 1) {
      badInput(where + ": box coordinates must be normalized numbers in [0, 1]");
    }
  }
  Exemplars out;
  out.boxes = text.boxes;
  for (int32_t label : text.boxLabels) {
    if (label != 0 && label != 1) badInput(where + ": box labels must be 0 or 1");
    out.boxLabels.push_back(label);
  }
  return out;
}

}  // namespace

ConceptResult addConcepts(Context& c, const FrameRequest& frame, const ConceptPrompt& prompt) {
  const ConceptSpec& k = conceptSpecOf(c.bundle);
  State& s = c.state;
  ConceptState& m = s.concepts;
  if (prompt.texts.empty()) badInput("texts: give at least one text");
  const int64_t L = c.bundle.manifest().text.contextLength;
  ConceptResult result;
  for (size_t t = 0; t < prompt.texts.size(); ++t) {
    const ConceptText& text = prompt.texts[t];
    const std::string where = "texts[" + std::to_string(t) + "]";
    if (static_cast<int64_t>(text.tokenIds.size()) != L ||
        static_cast<int64_t>(text.attentionMask.size()) != L) {
      badInput(where + ": tokenIds and attentionMask must hold " + std::to_string(L) + " numbers");
    }
    std::optional<Exemplars> exemplars = exemplarsOf(text, where);
    auto existing = std::find_if(m.concepts.begin(), m.concepts.end(),
                                 [&](const Concept& concept) { return concept.text == text.text; });
    if (existing != m.concepts.end()) {
      if (exemplars) existing->exemplars[prompt.frameIndex] = std::move(*exemplars);
      result.conceptIds.push_back(existing->id);
      continue;
    }
    at::Tensor ids = at::tensor(text.tokenIds, at::kInt).view({1, L}).to(at::kLong);
    at::Tensor mask = at::tensor(text.attentionMask, at::kInt).view({1, L}).to(at::kLong);
    NamedTensors outputs = c.bundle.call(
        ModuleKind::kTextEncoder,
        {{"input_ids", ids.to(c.bundle.device())}, {"attention_mask", mask.to(c.bundle.device())}},
        {{"B", 1}});
    c.clock.lap("text_encoder");
    Concept concept;
    concept.id = m.nextConceptId++;
    concept.text = text.text;
    concept.features = owned(outputs.at("text_features"));
    concept.mask = mask.to(c.bundle.device());
    if (exemplars) concept.exemplars[prompt.frameIndex] = std::move(*exemplars);
    m.concepts.push_back(std::move(concept));
    result.conceptIds.push_back(m.concepts.back().id);
  }
  m.promptFrames.insert(prompt.frameIndex);
  m.held.clear();
  HeldFrame held = detTrackOne(c, k, frame, prompt.frameIndex, /*reverse=*/false, k.hotstartDelay);
  result.frame = emit(c, held);
  return result;
}

std::vector<TrackerFrame> detTrackStep(Context& c, const FrameRequest& frame,
                                       const StepRequest& request) {
  const ConceptSpec& k = conceptSpecOf(c.bundle);
  ConceptState& m = c.state.concepts;
  if (request.hotstartDelay < -1) badInput("hotstartDelay must be -1 (default) or >= 0");
  const int64_t delay = request.hotstartDelay < 0 ? k.hotstartDelay : request.hotstartDelay;
  if (request.runStart) m.held.clear();
  m.held.push_back(detTrackOne(c, k, frame, request.frameIndex, request.reverse, delay));
  // propagate_in_video_iterator's buffer (M1825-1841).
  std::vector<TrackerFrame> emitted;
  if (delay == 0 || request.runEnd) {
    while (!m.held.empty()) {
      emitted.push_back(emit(c, m.held.front()));
      m.held.pop_front();
    }
  } else if (static_cast<int64_t>(m.held.size()) >= delay) {
    emitted.push_back(emit(c, m.held.front()));
    m.held.pop_front();
  }
  return emitted;
}

TrackerFrame refinedFrame(Context& c, int64_t frame, int64_t objId, const FrameLogits& logits) {
  State& s = c.state;
  ConceptState& m = s.concepts;
  m.score[objId] = 1.0f;
  HeldFrame held;
  held.frameIndex = frame;
  at::Tensor sigmoid = at::sigmoid(at::tensor(logits.scoreLogit, at::kFloat));
  std::vector<size_t> order(s.objects.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return s.objects[x].id < s.objects[y].id; });
  for (size_t i : order) {
    const ObjectState& object = s.objects[i];
    held.ids.push_back(object.id);
    held.lowRes.push_back(onHost(logits.lowRes[i].unsqueeze(0))[0]);
    held.scores[object.id] = m.score.count(object.id) ? m.score.at(object.id) : 0.0f;
    held.trackerScores[object.id] =
        object.id == objId ? 1.0f : sigmoid[static_cast<int64_t>(i)].item<float>();
    held.concepts[object.id] = object.conceptId;
  }
  auto suppressed = m.suppressed.find(frame);
  if (suppressed != m.suppressed.end()) held.suppressed = suppressed->second;
  return emit(c, held);
}

bool removeTrackedObject(State& s, int64_t objId) {
  if (!eraseObject(s, objId)) return false;
  if (s.objects.empty()) {
    // The last object: the reference resets the whole session, its frame cache included.
    s.featuresFrame = -1;
    for (at::Tensor& tensor : s.features) tensor = at::Tensor();
    for (at::Tensor& tensor : s.detectorFeatures) tensor = at::Tensor();
  }
  return true;
}

std::vector<int64_t> removeConcept(State& s, int64_t conceptId) {
  ConceptState& m = s.concepts;
  auto found = std::find_if(m.concepts.begin(), m.concepts.end(),
                            [&](const Concept& concept) { return concept.id == conceptId; });
  if (found == m.concepts.end())
    badInput("conceptId " + std::to_string(conceptId) + ": no such concept");
  std::vector<int64_t> removed;
  for (const ObjectState& object : s.objects) {
    if (object.conceptId == conceptId) removed.push_back(object.id);
  }
  for (int64_t objId : removed) removeTrackedObject(s, objId);
  m.concepts.erase(found);
  return removed;
}

void resetConcepts(State& s) {
  ConceptState fresh;
  fresh.nextConceptId = s.concepts.nextConceptId;  // concept ids are never reused either
  s.concepts = std::move(fresh);
}

}  // namespace sam3::tracking
