#include "tracker.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <set>
#include <utility>

#include "bundle.h"
#include "concept.h"
#include "errors.h"
#include "executor.h"
#include "image_pipeline.h"
#include "postprocess.h"
#include "tracker_state.h"
#include "vision.h"

// Line numbers (L<n>) cite transformers 5.17's modeling_sam3_tracker_video.py, as TRACKER.md.
namespace sam3 {

using namespace tracking;

namespace {

std::atomic<int64_t> trackerBytes{0};

// What forward decides for one object before any model call.
struct Planned {
  size_t object = 0;  // index into State::objects
  bool isInit = false;
  bool reverse = false;
  const FramePrompt* prompt = nullptr;  // the frame's points when the object had new inputs
  const at::Tensor* mask = nullptr;     // or its mask input (a detection entering the tracker)
};

// One computed object's results on this frame.
struct Computed {
  at::Tensor lowResMasks;   // [1, 4G, 4G]
  at::Tensor highResMasks;  // [1, R, R]
  at::Tensor pointer;       // [C]
  at::Tensor memory;        // [G*G, M]
  float scoreLogit = 0;
  float iou = 0;
};

}  // namespace

namespace tracking {

void badInput(const std::string& message) { throw CoreError(ErrorCode::kBadInput, message); }

int64_t bytesOf(const at::Tensor& tensor) { return tensor.defined() ? tensorBytes(tensor) : 0; }

int64_t bytesOf(const StoredOutput& out) {
  return bytesOf(out.memory) + bytesOf(out.pointer) + bytesOf(out.lowResMasks);
}

}  // namespace tracking

int64_t TrackerSession::State::bytes() const {
  using tracking::bytesOf;
  int64_t total = 0;
  for (const at::Tensor& tensor : features) total += bytesOf(tensor);
  for (const at::Tensor& tensor : detectorFeatures) total += bytesOf(tensor);
  for (const tracking::ObjectState& object : objects) {
    for (const auto& entry : object.cond) total += bytesOf(entry.second);
    for (const auto& entry : object.nonCond) total += bytesOf(entry.second);
    for (const auto& entry : object.maskInputs) total += bytesOf(entry.second);
  }
  for (const tracking::Concept& concept : concepts.concepts) {
    total += bytesOf(concept.features) + bytesOf(concept.mask);
  }
  for (const tracking::HeldFrame& held : concepts.held) {
    for (const at::Tensor& mask : held.lowRes) total += bytesOf(mask);
  }
  return total;
}

tracking::ObjectState* TrackerSession::State::find(int64_t objId) {
  const size_t index = indexOf(objId);
  return index == objects.size() ? nullptr : &objects[index];
}

size_t TrackerSession::State::indexOf(int64_t objId) const {
  for (size_t i = 0; i < objects.size(); ++i) {
    if (objects[i].id == objId) return i;
  }
  return objects.size();
}

namespace tracking {

void checkFrame(const TrackerOptions& options, const FrameRequest& frame, int64_t frameIndex) {
  if (frameIndex < 0 || frameIndex >= options.numFrames) {
    badInput("frameIndex " + std::to_string(frameIndex) + " is outside the video's frames 0.." +
             std::to_string(options.numFrames - 1));
  }
  if (frame.rgb == nullptr) badInput("rgb buffer is missing");
  const size_t expected = static_cast<size_t>(options.width * options.height * 3);
  if (frame.byteLength != expected) {
    badInput("rgb buffer has " + std::to_string(frame.byteLength) + " bytes, expected " +
             std::to_string(expected) + " (width * height * 3)");
  }
}

// The prompt as add_point_inputs stores it: a box as its two corners (labels 2, 3) before
// the clicks, everything in pixels of the R x R input (float32, as the reference scales).
FramePrompt framePrompt(const TrackerPrompt& prompt, int64_t resolution) {
  const size_t clicks = prompt.pointLabels.size();
  if (clicks > kMaxTrackerClicks) {
    badInput("pointLabels: at most " + std::to_string(kMaxTrackerClicks) +
             " clicks are allowed (got " + std::to_string(clicks) + ")");
  }
  if (prompt.points.size() != 2 * clicks) {
    badInput("points must hold 2 numbers (x, y) per point label (got " +
             std::to_string(prompt.points.size()) + " numbers for " + std::to_string(clicks) +
             " labels)");
  }
  for (double v : prompt.points) {
    if (!std::isfinite(v)) badInput("points: coordinates must be finite");
  }
  for (int32_t label : prompt.pointLabels) {
    if (label != 0 && label != 1) badInput("pointLabels must be 1 (positive) or 0 (negative)");
  }
  if (!prompt.box.empty() && prompt.box.size() != 4) {
    badInput("box must be null or 4 numbers (cx, cy, w, h)");
  }
  for (double v : prompt.box) {
    if (!std::isfinite(v)) badInput("box: coordinates must be finite");
  }
  if (clicks == 0 && prompt.box.empty()) badInput("points: give at least one click or a box");
  // The reference refuses this too: a box must come before every click of the frame.
  if (!prompt.box.empty() && !prompt.clearOld) {
    badInput("box: a box replaces the object's inputs on the frame (clearOld must be true)");
  }

  // Pixels computed in double and rounded once to float32, as the video reference does
  // (tools/video_reference.py scales Python floats, then makes a float32 tensor).
  const double R = static_cast<double>(resolution);
  auto pixels = [R](double normalized) { return static_cast<float>(normalized * R); };
  FramePrompt out;
  if (!prompt.box.empty()) {
    const double cx = prompt.box[0], cy = prompt.box[1], w = prompt.box[2], h = prompt.box[3];
    for (double corner : {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2}) {
      out.xy.push_back(pixels(corner));
    }
    out.labels = {2, 3};
  }
  for (size_t i = 0; i < clicks; ++i) {
    out.xy.push_back(pixels(prompt.points[2 * i]));
    out.xy.push_back(pixels(prompt.points[2 * i + 1]));
    out.labels.push_back(prompt.pointLabels[i]);
  }
  return out;
}

// tracker_fpn_0..2 of the frame, computed once per frame (the reference's cache of size 1);
// with `detector`, the detector's fpn_0..2 of the same vision pass too. A bundle split into
// trunk and necks (format 4) runs the detector's neck only when asked.
void ensureFeatures(Context& c, const FrameRequest& frame, int64_t frameIndex, bool detector) {
  State& s = c.state;
  if (s.featuresFrame == frameIndex && (!detector || s.detectorFeatures[0].defined())) return;
  const Manifest& m = c.bundle.manifest();
  s.featuresFrame = -1;
  for (at::Tensor& tensor : s.features) tensor = at::Tensor();
  for (at::Tensor& tensor : s.detectorFeatures) tensor = at::Tensor();
  ImageNormalization normalization{m.imageMean, m.imageStd};
  at::Tensor pixels = preprocessImage(frame.rgb, c.options.width, c.options.height, m.resolution,
                                      normalization, c.bundle.device());
  c.clock.lap("preprocess");
  VisionMaps maps = encodeVision(c.bundle, pixels, ImageMaps{detector, true, false});
  for (size_t level = 0; level < 3; ++level) {
    s.features[level] = owned(maps.tracker[level]);
    if (detector) s.detectorFeatures[level] = owned(maps.detector[level]);
  }
  s.featuresFrame = frameIndex;
  c.clock.lap("vision_encoder");
}

}  // namespace tracking

namespace {

// _select_closest_cond_frames (L2240): up to maxCond conditioning frames, the closest before
// and at-or-after the frame first, then the rest by distance (ties in insertion order).
// Returns (selected, unselected), each in insertion order.
std::pair<std::vector<int64_t>, std::set<int64_t>> selectCondFrames(const ObjectState& object,
                                                                    int64_t frame,
                                                                    int64_t maxCond) {
  if (static_cast<int64_t>(object.condOrder.size()) <= maxCond) return {object.condOrder, {}};
  std::optional<int64_t> before, after;
  for (int64_t t : object.condOrder) {
    if (t < frame && (!before || t > *before)) before = t;
    if (t >= frame && (!after || t < *after)) after = t;
  }
  std::set<int64_t> chosen;
  if (before) chosen.insert(*before);
  if (after) chosen.insert(*after);
  std::vector<int64_t> rest;
  for (int64_t t : object.condOrder) {
    if (chosen.count(t) == 0) rest.push_back(t);
  }
  std::stable_sort(rest.begin(), rest.end(), [frame](int64_t a, int64_t b) {
    return std::llabs(a - frame) < std::llabs(b - frame);
  });
  for (int64_t t : rest) {
    if (static_cast<int64_t>(chosen.size()) >= maxCond) break;
    chosen.insert(t);
  }
  std::vector<int64_t> selected;
  std::set<int64_t> unselected;
  for (int64_t t : object.condOrder) {
    if (chosen.count(t) != 0) {
      selected.push_back(t);
    } else {
      unselected.insert(t);
    }
  }
  return {selected, unselected};
}

// One object's memory bank on one frame: what memory_attention reads, before padding.
struct Bank {
  std::vector<std::pair<const at::Tensor*, int64_t>> memories;  // memory, temporal index
  std::vector<std::pair<const at::Tensor*, float>> pointers;    // pointer, offset / (P - 1)
};

// _prepare_memory_conditioned_features' gathering (L2544-2586) for one object on `frame`.
Bank gatherBank(const Context& c, const ObjectState& object, int64_t frame, bool reverse) {
  const TrackerSpec& t = c.spec;
  const int64_t T = c.options.numFrames;
  if (object.cond.empty()) {
    // The reference raises here (L2297); an object always has its first prompt's frame.
    throw CoreError(ErrorCode::kInternal, "object " + std::to_string(object.id) +
                                              " has no conditioning frame to attend to");
  }
  Bank bank;
  // Spatial memories (L2280-2325): selected conditioning frames, then frames f-k (f+k in
  // reverse) for k = num_maskmem-1..1 from the non-conditioning outputs, falling back to an
  // unselected conditioning frame at that index.
  auto [selected, unselected] = selectCondFrames(object, frame, t.maxCondFramesInAttn);
  for (int64_t cond : selected) {
    bank.memories.emplace_back(&object.cond.at(cond).memory, t.numMaskmem - 1);
  }
  for (int64_t k = t.numMaskmem - 1; k >= 1; --k) {
    const int64_t previous = reverse ? frame + k : frame - k;
    auto found = object.nonCond.find(previous);
    if (found != object.nonCond.end()) {
      bank.memories.emplace_back(&found->second.memory, k - 1);
    } else if (unselected.count(previous) != 0) {
      bank.memories.emplace_back(&object.cond.at(previous).memory, k - 1);
    }
  }

  // Object pointers (L2362-2421): every conditioning frame at or before the frame (at or
  // after in reverse), then non-conditioning frames f-1..f-(P-1) (f+1.. in reverse).
  // P = min(T, max_object_pointers) and offsets / (P - 1) as L2384 and L2441 (P = 1 only with
  // T = 1, where no frame attends to memories).
  const int64_t P = std::min(T, t.maxObjectPointers);
  const float scale = static_cast<float>(std::max<int64_t>(1, P - 1));
  std::vector<std::pair<int64_t, const at::Tensor*>> condPointers, framePointers;
  for (int64_t cond : object.condOrder) {
    if (reverse ? cond >= frame : cond <= frame) {
      condPointers.emplace_back((frame - cond) * (reverse ? -1 : 1), &object.cond.at(cond).pointer);
    }
  }
  for (int64_t k = 1; k < P; ++k) {
    const int64_t previous = reverse ? frame + k : frame - k;
    if (previous < 0 || previous >= T) break;
    auto found = object.nonCond.find(previous);
    if (found != object.nonCond.end()) framePointers.emplace_back(k, &found->second.pointer);
  }
  // The reference has no cap on conditioning pointers; past pointer_slots keep the closest.
  const size_t condRoom = static_cast<size_t>(t.pointerSlots) - framePointers.size();
  if (condPointers.size() > condRoom) {
    std::stable_sort(condPointers.begin(), condPointers.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    condPointers.resize(condRoom);
  }
  for (const auto* list : {&condPointers, &framePointers}) {
    for (const auto& [offset, pointer] : *list) {
      bank.pointers.emplace_back(pointer, static_cast<float>(offset) / scale);
    }
  }
  return bank;
}

// The memory-conditioned features of every planned non-initial object, one batched
// memory_attention call: each row its own padded bank with validity masks. Slots are padded to
// the manifest's memory_slots / pointer_slots, or, where the manifest leaves that dimension
// symbolic, only to the most any row of this call uses (the same result, less work: invalid
// slots are masked out anyway). Returns [B, C, G, G] in `rows` order.
at::Tensor attendMemories(Context& c, const std::vector<Planned>& rows, int64_t frame) {
  const TrackerSpec& t = c.spec;
  const int64_t B = static_cast<int64_t>(rows.size());
  const int64_t G = c.bundle.manifest().featureSize, GG = G * G, M = t.memDim;
  const int64_t C = t.hiddenSize;

  std::vector<Bank> banks;
  size_t mostMemories = 1, mostPointers = 1;
  for (const Planned& row : rows) {
    banks.push_back(gatherBank(c, c.state.objects[row.object], frame, row.reverse));
    mostMemories = std::max(mostMemories, banks.back().memories.size());
    mostPointers = std::max(mostPointers, banks.back().pointers.size());
  }
  const int64_t NS = t.memorySlotsFlexible ? static_cast<int64_t>(mostMemories) : t.memorySlots;
  const int64_t NP = t.pointerSlotsFlexible ? static_cast<int64_t>(mostPointers) : t.pointerSlots;

  const at::TensorOptions onDevice =
      at::TensorOptions().device(c.bundle.device()).dtype(at::kFloat);
  at::Tensor memory = at::zeros({B, NS, GG, M}, onDevice);
  at::Tensor pointers = at::zeros({B, NP, C}, onDevice);
  at::Tensor tpos = at::zeros({B, NS}, at::kLong);
  at::Tensor memoryValid = at::zeros({B, NS}, at::kFloat);
  at::Tensor offsets = at::zeros({B, NP}, at::kFloat);
  at::Tensor pointerValid = at::zeros({B, NP}, at::kFloat);
  auto tposOf = tpos.accessor<int64_t, 2>();
  auto memoryValidOf = memoryValid.accessor<float, 2>();
  auto offsetsOf = offsets.accessor<float, 2>();
  auto pointerValidOf = pointerValid.accessor<float, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const Bank& bank = banks[static_cast<size_t>(b)];
    for (size_t s = 0; s < bank.memories.size(); ++s) {
      const int64_t slot = static_cast<int64_t>(s);
      memory[b][slot].copy_(*bank.memories[s].first);  // bfloat16 -> float32, as L2570
      tposOf[b][slot] = bank.memories[s].second;
      memoryValidOf[b][slot] = 1;
    }
    for (size_t p = 0; p < bank.pointers.size(); ++p) {
      const int64_t slot = static_cast<int64_t>(p);
      pointers[b][slot].copy_(*bank.pointers[p].first);
      offsetsOf[b][slot] = bank.pointers[p].second;
      pointerValidOf[b][slot] = 1;
    }
  }

  NamedTensors outputs = c.bundle.call(ModuleKind::kMemoryAttention,
                                       {{"current", c.state.features[2]},
                                        {"memory", memory},
                                        {"memory_tpos", tpos},
                                        {"memory_valid", memoryValid},
                                        {"pointers", pointers},
                                        {"pointer_offsets", offsets},
                                        {"pointer_valid", pointerValid}},
                                       {});
  c.clock.lap("memory_attention");
  return outputs.at("conditioned");
}

// _use_multimask (L2588): 3 masks for 0 or 1 point (defaults), on initial frames or while
// tracking when multimask_output_for_tracking.
bool useMultimask(const TrackerSpec& t, bool isInit, const FramePrompt* prompt) {
  const int64_t points = prompt == nullptr ? 0 : static_cast<int64_t>(prompt->labels.size());
  return t.multimaskOutputInSam && (isInit || t.multimaskOutputForTracking) &&
         t.multimaskMinPtNum <= points && points <= t.multimaskMaxPtNum;
}

// Decodes every computed object: objects with the same decoder and number of points share one
// batched call. `conditioned` is [B, C, G, G] in `plan` order.
std::vector<Computed> decode(Context& c, const std::vector<Planned>& plan,
                             const at::Tensor& conditioned) {
  // (multimask, points) -> rows of the plan
  std::map<std::pair<bool, int64_t>, std::vector<int64_t>> groups;
  for (size_t i = 0; i < plan.size(); ++i) {
    const FramePrompt* prompt = plan[i].prompt;
    // No prompt: one (0, 0) point labelled -1, as the reference's dummy prompt (L2094).
    const int64_t N = prompt == nullptr ? 1 : static_cast<int64_t>(prompt->labels.size());
    groups[{useMultimask(c.spec, plan[i].isInit, prompt), N}].push_back(static_cast<int64_t>(i));
  }
  std::vector<Computed> computed(plan.size());
  for (const auto& [key, members] : groups) {
    const auto [multimask, N] = key;
    const int64_t B = static_cast<int64_t>(members.size());
    at::Tensor points = at::zeros({B, 1, N, 2}, at::kFloat);
    at::Tensor labels = at::full({B, 1, N}, -1, at::kLong);
    float* xy = points.data_ptr<float>();
    int64_t* label = labels.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      const FramePrompt* prompt = plan[static_cast<size_t>(members[static_cast<size_t>(b)])].prompt;
      if (prompt == nullptr) continue;
      std::copy(prompt->xy.begin(), prompt->xy.end(), xy + b * N * 2);
      std::copy(prompt->labels.begin(), prompt->labels.end(), label + b * N);
    }
    at::Tensor index = at::tensor(at::ArrayRef<int64_t>(members.data(), members.size()), at::kLong)
                           .to(conditioned.device());
    NamedTensors outputs = c.bundle.call(
        multimask ? ModuleKind::kTrackerDecoderMultimask : ModuleKind::kTrackerDecoder,
        {{"conditioned", conditioned.index_select(0, index)},
         {"tracker_fpn_0", c.state.features[0]},
         {"tracker_fpn_1", c.state.features[1]},
         {"points", points},
         {"point_labels", labels}},
        {});
    at::Tensor scores =
        outputs.at("object_score_logits").to(at::kCPU, at::kFloat).reshape({B}).contiguous();
    at::Tensor iou = outputs.at("iou_scores").to(at::kCPU, at::kFloat).reshape({B}).contiguous();
    for (int64_t b = 0; b < B; ++b) {
      Computed& out = computed[static_cast<size_t>(members[static_cast<size_t>(b)])];
      out.lowResMasks = outputs.at("low_res_masks")[b].to(at::kFloat);
      out.highResMasks = outputs.at("high_res_masks")[b];
      out.pointer = outputs.at("object_pointer")[b].to(at::kFloat);
      out.scoreLogit = scores.data_ptr<float>()[b];
      out.iou = iou.data_ptr<float>()[b];
    }
  }
  c.clock.lap("tracker_decoder");
  return computed;
}

// _use_mask_as_output (L2183) for every planned object with a mask input: one batched call of
// the bundle's tracker_mask_decoder.
void decodeMasks(Context& c, const std::vector<Planned>& plan, std::vector<Computed>& computed) {
  std::vector<int64_t> members;
  std::vector<at::Tensor> masks;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].mask == nullptr) continue;
    members.push_back(static_cast<int64_t>(i));
    masks.push_back(*plan[i].mask);
  }
  if (members.empty()) return;
  const int64_t B = static_cast<int64_t>(members.size());
  NamedTensors outputs = c.bundle.call(ModuleKind::kTrackerMaskDecoder,
                                       {{"tracker_fpn_0", c.state.features[0]},
                                        {"tracker_fpn_1", c.state.features[1]},
                                        {"tracker_fpn_2", c.state.features[2]},
                                        {"mask_inputs", at::cat(masks, 0)}},
                                       {{"B", B}});
  at::Tensor scores =
      outputs.at("object_score_logits").to(at::kCPU, at::kFloat).reshape({B}).contiguous();
  for (int64_t b = 0; b < B; ++b) {
    Computed& out = computed[static_cast<size_t>(members[static_cast<size_t>(b)])];
    out.lowResMasks = outputs.at("low_res_masks")[b].to(at::kFloat);
    out.highResMasks = outputs.at("high_res_masks")[b];
    out.pointer = outputs.at("object_pointer")[b].to(at::kFloat);
    out.scoreLogit = scores.data_ptr<float>()[b];
    out.iou = 1.0f;  // the reference's dummy IoU of a mask input
  }
  c.clock.lap("tracker_mask_decoder");
}

}  // namespace

namespace tracking {

// forward(frame, reverse) (L1797) over all objects. Nothing is stored until every model call
// succeeded.
FrameLogits forwardObjects(Context& c, const FrameRequest& frameRequest, int64_t frame,
                           bool reverse, bool encodeMemory) {
  State& s = c.state;
  const TrackerSpec& t = c.spec;
  std::vector<int64_t> withNewInputs = s.withNewInputs;

  // Per object in creation order: reuse a conditioning output, or plan a computation.
  std::vector<Planned> plan;
  std::vector<std::optional<size_t>> planOf(s.objects.size());
  for (size_t i = 0; i < s.objects.size(); ++i) {
    const ObjectState& object = s.objects[i];
    auto pending = std::find(withNewInputs.begin(), withNewInputs.end(), object.id);
    const bool hasNewInputs = pending != withNewInputs.end();
    if (!hasNewInputs && object.cond.count(frame) != 0) continue;  // reused (L1843)
    Planned planned;
    planned.object = i;
    if (hasNewInputs) {
      planned.isInit = object.framesTracked.count(frame) == 0;
      // The reference assigns the function-local `reverse` (L1858): every later object of
      // this call runs forward too.
      if (planned.isInit) reverse = false;
      auto prompt = object.prompts.find(frame);
      auto mask = object.maskInputs.find(frame);
      if (prompt != object.prompts.end()) planned.prompt = &prompt->second;
      if (mask != object.maskInputs.end()) planned.mask = &mask->second;
      if (planned.prompt != nullptr || planned.mask != nullptr) withNewInputs.erase(pending);
    }
    planned.reverse = reverse;
    planOf[i] = plan.size();
    plan.push_back(planned);
  }

  const int64_t G = c.bundle.manifest().featureSize;
  std::vector<Computed> computed(plan.size());
  if (!plan.empty()) {
    ensureFeatures(c, frameRequest, frame, /*detector=*/false);
    const int64_t C = t.hiddenSize;
    // Objects through the SAM heads: all but those with a mask input (L2660).
    std::vector<Planned> heads;
    std::vector<size_t> headRows;
    for (size_t i = 0; i < plan.size(); ++i) {
      if (plan[i].mask != nullptr) continue;
      heads.push_back(plan[i]);
      headRows.push_back(i);
    }
    if (!heads.empty()) {
      at::Tensor conditioned = at::empty({static_cast<int64_t>(heads.size()), C, G, G},
                                         at::TensorOptions().device(c.bundle.device()));
      std::vector<Planned> attending;
      std::vector<int64_t> attendingRows;
      for (size_t i = 0; i < heads.size(); ++i) {
        if (heads[i].isInit) {
          // An initial conditioning frame sees no memory (L2533-2542).
          conditioned[static_cast<int64_t>(i)].copy_(
              (s.features[2] + c.bundle.noMemoryEmbedding())[0]);
        } else {
          attending.push_back(heads[i]);
          attendingRows.push_back(static_cast<int64_t>(i));
        }
      }
      if (!attending.empty()) {
        at::Tensor attended = attendMemories(c, attending, frame);
        at::Tensor rows =
            at::tensor(at::ArrayRef<int64_t>(attendingRows.data(), attendingRows.size()), at::kLong)
                .to(conditioned.device());
        conditioned.index_copy_(0, rows, attended.to(at::kFloat));
      }
      std::vector<Computed> decoded = decode(c, heads, conditioned);
      for (size_t i = 0; i < heads.size(); ++i) computed[headRows[i]] = std::move(decoded[i]);
    }
    decodeMasks(c, plan, computed);

    if (encodeMemory) {
      // _batch_encode_memories (L2761): one call for every computed object, binarized masks
      // for all of them when any had inputs on this frame (L2799).
      std::vector<at::Tensor> highRes, scores;
      bool binarize = false;
      for (size_t i = 0; i < plan.size(); ++i) {
        highRes.push_back(computed[i].highResMasks);
        scores.push_back(at::full({1, 1}, computed[i].scoreLogit, at::kFloat));
        binarize = binarize || plan[i].prompt != nullptr || plan[i].mask != nullptr;
      }
      NamedTensors encoded =
          c.bundle.call(ModuleKind::kMemoryEncoder,
                        {{"current", s.features[2]},
                         {"high_res_masks", at::stack(highRes, 0)},
                         {"object_score_logits", at::cat(scores, 0)},
                         {"binarize", at::full({1}, binarize ? 1.0f : 0.0f, at::kFloat)}},
                        {});
      const at::Tensor& memory = encoded.at("memory");
      for (size_t i = 0; i < plan.size(); ++i) {
        computed[i].memory = owned(memory[static_cast<int64_t>(i)]);
      }
      c.clock.lap("memory_encoder");
    }
  }

  FrameLogits result;
  for (size_t i = 0; i < s.objects.size(); ++i) {
    const ObjectState& object = s.objects[i];
    if (planOf[i]) {
      const Computed& fresh = computed[*planOf[i]];
      result.lowRes.push_back(fresh.lowResMasks[0]);
      result.scoreLogit.push_back(fresh.scoreLogit);
      result.iou.push_back(fresh.iou);
    } else {
      const StoredOutput& reused = object.cond.at(frame);
      result.lowRes.push_back(reused.lowResMasks);
      result.scoreLogit.push_back(reused.scoreLogit);
      result.iou.push_back(reused.iou);
    }
  }

  // Commit (store_output L1875, frames_tracked L1890).
  for (size_t p = 0; p < plan.size(); ++p) {
    ObjectState& object = s.objects[plan[p].object];
    Computed& fresh = computed[p];
    StoredOutput out;
    out.memory = std::move(fresh.memory);
    out.pointer = owned(fresh.pointer);
    out.scoreLogit = fresh.scoreLogit;
    out.iou = fresh.iou;
    out.written = ++s.writes;
    if (plan[p].isInit) {
      out.lowResMasks = owned(fresh.lowResMasks[0]);
      if (object.cond.count(frame) == 0) object.condOrder.push_back(frame);
      object.cond[frame] = std::move(out);
      continue;
    }
    object.nonCond[frame] = std::move(out);
    object.framesTracked.insert(frame);
    while (static_cast<int64_t>(object.nonCond.size()) > c.options.memoryFrames) {
      auto oldest = object.nonCond.begin();
      for (auto it = object.nonCond.begin(); it != object.nonCond.end(); ++it) {
        if (it->second.written < oldest->second.written) oldest = it;
      }
      object.nonCond.erase(oldest);
    }
  }
  s.withNewInputs = std::move(withNewInputs);
  return result;
}

void encodeMemories(Context& c, int64_t frame, const std::vector<size_t>& rows,
                    const at::Tensor& masks, const at::Tensor& scoreLogits, bool binarize) {
  if (rows.empty()) return;
  State& s = c.state;
  NamedTensors encoded =
      c.bundle.call(ModuleKind::kMemoryEncoder,
                    {{"current", s.features[2]},
                     {"high_res_masks", masks.to(c.bundle.device(), at::kFloat)},
                     {"object_score_logits", scoreLogits.to(c.bundle.device(), at::kFloat)},
                     {"binarize", at::full({1}, binarize ? 1.0f : 0.0f, at::kFloat)}},
                    {});
  const at::Tensor& memory = encoded.at("memory");
  for (size_t i = 0; i < rows.size(); ++i) {
    ObjectState& object = s.objects[rows[i]];
    at::Tensor row = owned(memory[static_cast<int64_t>(i)]);
    auto cond = object.cond.find(frame);
    if (cond != object.cond.end()) cond->second.memory = row;
    auto nonCond = object.nonCond.find(frame);
    if (nonCond != object.nonCond.end()) nonCond->second.memory = row;
  }
  c.clock.lap("memory_encoder");
}

bool eraseObject(State& s, int64_t objId) {
  const size_t index = s.indexOf(objId);
  if (index == s.objects.size()) return false;
  s.objects.erase(s.objects.begin() + static_cast<std::ptrdiff_t>(index));
  s.withNewInputs.erase(std::remove(s.withNewInputs.begin(), s.withNewInputs.end(), objId),
                        s.withNewInputs.end());
  return true;
}

}  // namespace tracking

namespace {

// The clicked-object frame: every object's output, from its low-res logits, in creation order.
TrackerFrame encodeTrackerFrame(Context& c, int64_t frame, const FrameLogits& logits) {
  TrackerFrame result;
  result.frameIndex = frame;
  for (size_t i = 0; i < c.state.objects.size(); ++i) {
    TrackedObject out;
    out.objId = c.state.objects[i].id;
    out.present = logits.scoreLogit[i] > 0;
    out.score = logits.iou[i];
    result.objects.push_back(std::move(out));
  }
  if (!logits.lowRes.empty()) {
    std::vector<MaskBounds> bounds;
    c.clock.lap("postprocess");
    std::vector<std::string> masks = encodeMasks(at::stack(logits.lowRes, 0), c.options.height,
                                                 c.options.width, c.clock, &bounds);
    for (size_t i = 0; i < result.objects.size(); ++i) {
      result.objects[i].mask = std::move(masks[i]);
      result.objects[i].box = normalizedBox(bounds[i], c.options.height, c.options.width);
    }
  }
  return result;
}

const TrackerSpec& trackerSpecOf(const Bundle& bundle) {
  if (!bundle.hasTracker()) {
    badInput("this bundle has no video tracker modules (bundle format 1): export it again");
  }
  return *bundle.manifest().tracker;
}

}  // namespace

// One task on the session: refuses a released session, marks it busy while running, then
// publishes the read-only view (or frees the state if release() came meanwhile).
class TrackerSession::Task {
 public:
  explicit Task(TrackerSession& session) : session_(session) {
    std::lock_guard<std::mutex> lock(session_.mutex_);
    if (session_.closed_ || !session_.state_) {
      throw CoreError(ErrorCode::kSessionClosed, "the video tracker session was released");
    }
    session_.busy_ = true;
  }
  ~Task() {
    std::lock_guard<std::mutex> lock(session_.mutex_);
    session_.busy_ = false;
    if (session_.closed_) {
      session_.freeLocked();
    } else {
      session_.publishLocked();
    }
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  State& state() { return *session_.state_; }

 private:
  TrackerSession& session_;
};

TrackerSession::TrackerSession(uint64_t bundleId, const TrackerOptions& options)
    : bundleId_(bundleId), options_(options), state_(std::make_unique<State>()) {}

TrackerSession::~TrackerSession() {
  std::lock_guard<std::mutex> lock(mutex_);
  freeLocked();
}

void TrackerSession::freeLocked() {
  state_.reset();
  trackerBytes -= byteSize_;
  byteSize_ = 0;
  objectIds_.clear();
  objectConcepts_.clear();
  promptFrames_.clear();
}

void TrackerSession::publishLocked() {
  objectIds_.clear();
  objectConcepts_.clear();
  std::set<int64_t> frames = state_->concepts.promptFrames;
  for (const ObjectState& object : state_->objects) {
    objectIds_.push_back(object.id);
    objectConcepts_.push_back(object.conceptId);
    for (const auto& entry : object.cond) frames.insert(entry.first);
  }
  promptFrames_.assign(frames.begin(), frames.end());
  const int64_t bytes = state_->bytes();
  trackerBytes += bytes - byteSize_;
  byteSize_ = bytes;
}

std::vector<int64_t> TrackerSession::objectIds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return objectIds_;
}

std::vector<int64_t> TrackerSession::objectConcepts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return objectConcepts_;
}

std::vector<int64_t> TrackerSession::promptFrames() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return promptFrames_;
}

int64_t TrackerSession::byteSize() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return byteSize_;
}

void TrackerSession::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  if (!busy_) freeLocked();
}

bool TrackerSession::released() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_;
}

namespace {

// Runs one operation on the state; if it throws, the state is as it was before (tensors are
// never written in place, so a copy of the state is a cheap snapshot).
template <typename Body>
auto atomically(State& state, Body body) -> decltype(body()) {
  State before = state;
  try {
    return body();
  } catch (...) {
    state = std::move(before);
    throw;
  }
}

}  // namespace

TrackerFrame TrackerSession::addPrompt(Bundle& bundle, const Executor& executor,
                                       const FrameRequest& frame, const TrackerPrompt& prompt,
                                       std::map<std::string, double>& times) {
  Task task(*this);
  State& s = task.state();
  const TrackerSpec& spec = trackerSpecOf(bundle);
  checkFrame(options_, frame, prompt.frameIndex);
  if (prompt.objId < 1) badInput("objId must be a positive integer");
  FramePrompt added = framePrompt(prompt, bundle.manifest().resolution);
  const bool concepts = s.concepts.active();
  if (concepts && s.find(prompt.objId) == nullptr) {
    badInput("objId " + std::to_string(prompt.objId) +
             ": no such object; a session tracking text concepts takes clicks only to refine "
             "its objects");
  }

  StageClock clock(executor);
  Context context{s, bundle, spec, options_, clock};
  TrackerFrame result = atomically(s, [&] {
    const int64_t f = prompt.frameIndex;
    ObjectState* object = s.find(prompt.objId);
    if (object == nullptr) {
      s.objects.emplace_back();
      object = &s.objects.back();
      object->id = prompt.objId;
      s.maxObjId = std::max(s.maxObjId, prompt.objId);
    }
    // Without clearOld, the clicks join the object's earlier ones on this frame.
    FramePrompt merged = added;
    auto previous = object->prompts.find(f);
    if (!prompt.clearOld && previous != object->prompts.end()) {
      merged = previous->second;
      merged.xy.insert(merged.xy.end(), added.xy.begin(), added.xy.end());
      merged.labels.insert(merged.labels.end(), added.labels.begin(), added.labels.end());
      if (merged.labels.size() > kMaxTrackerClicks) {
        badInput("pointLabels: the object would have more than " +
                 std::to_string(kMaxTrackerClicks) + " clicks on frame " + std::to_string(f));
      }
    }
    object->prompts[f] = std::move(merged);
    // Clicks and a mask input never share a frame (the processor drops the mask, L2648).
    object->maskInputs.erase(f);
    // The processor replaces the list with the prompted objects.
    s.withNewInputs = {prompt.objId};
    s.concepts.held.clear();
    FrameLogits logits = forwardObjects(context, frame, f, /*reverse=*/false,
                                        /*encodeMemory=*/true);
    if (concepts) return refinedFrame(context, f, prompt.objId, logits);
    return encodeTrackerFrame(context, f, logits);
  });
  times = clock.times();
  return result;
}

ConceptResult TrackerSession::addConcept(Bundle& bundle, const Executor& executor,
                                         const FrameRequest& frame, const ConceptPrompt& prompt,
                                         std::map<std::string, double>& times) {
  Task task(*this);
  State& s = task.state();
  const TrackerSpec& spec = trackerSpecOf(bundle);
  checkFrame(options_, frame, prompt.frameIndex);
  if (!s.concepts.active() && !s.objects.empty()) {
    badInput(
        "texts: this session tracks objects created by clicks; text prompts need a session "
        "without them (reset it first)");
  }
  StageClock clock(executor);
  Context context{s, bundle, spec, options_, clock};
  ConceptResult result =
      atomically(s, [&] { return tracking::addConcepts(context, frame, prompt); });
  times = clock.times();
  return result;
}

std::vector<TrackerFrame> TrackerSession::step(Bundle& bundle, const Executor& executor,
                                               const FrameRequest& frame,
                                               const StepRequest& request,
                                               std::map<std::string, double>& times) {
  Task task(*this);
  State& s = task.state();
  const TrackerSpec& spec = trackerSpecOf(bundle);
  checkFrame(options_, frame, request.frameIndex);
  StageClock clock(executor);
  Context context{s, bundle, spec, options_, clock};
  std::vector<TrackerFrame> result = atomically(s, [&] {
    if (s.concepts.active()) return detTrackStep(context, frame, request);
    FrameLogits logits = forwardObjects(context, frame, request.frameIndex, request.reverse,
                                        /*encodeMemory=*/true);
    return std::vector<TrackerFrame>{encodeTrackerFrame(context, request.frameIndex, logits)};
  });
  times = clock.times();
  return result;
}

bool TrackerSession::removeObject(int64_t objId) {
  Task task(*this);
  State& s = task.state();
  s.concepts.held.clear();
  return removeTrackedObject(s, objId);
}

std::vector<int64_t> TrackerSession::removeConcept(int64_t conceptId) {
  Task task(*this);
  State& s = task.state();
  s.concepts.held.clear();
  return tracking::removeConcept(s, conceptId);
}

int64_t TrackerSession::reset() {
  Task task(*this);
  State& s = task.state();
  const int64_t cleared = static_cast<int64_t>(s.objects.size());
  s.objects.clear();
  s.withNewInputs.clear();
  resetConcepts(s);
  return cleared;
}

int64_t liveTrackerBytes() { return trackerBytes.load(); }

}  // namespace sam3
