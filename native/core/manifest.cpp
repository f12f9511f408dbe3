#include "manifest.h"

#include <cmath>
#include <set>
#include <string>

#include "errors.h"
#include "json.h"

namespace sam3 {

const std::array<const char*, 6> kVisionEncoderOutputs = {
    "fpn_0", "fpn_1", "fpn_2", "tracker_fpn_0", "tracker_fpn_1", "tracker_fpn_2"};
const char* const kVisionFeatures = "vision_features";
const std::array<const char*, 7> kDetectorInputs = {
    "fpn_0", "fpn_1", "fpn_2", "text_features", "text_mask", "boxes", "box_labels"};
const std::array<const char*, 4> kDetectorOutputs = {"pred_logits", "pred_boxes", "presence_logits",
                                                     "pred_masks"};
const std::array<const char*, 5> kPointDecoderInputs = {"tracker_fpn_0", "tracker_fpn_1",
                                                        "tracker_fpn_2", "points", "point_labels"};
const std::array<const char*, 3> kPointDecoderOutputs = {"mask_logits", "iou_scores",
                                                         "object_score_logits"};
const std::array<const char*, 7> kMemoryAttentionInputs = {
    "current",  "memory",          "memory_tpos",  "memory_valid",
    "pointers", "pointer_offsets", "pointer_valid"};
const std::array<const char*, 5> kTrackerDecoderInputs = {
    "conditioned", "tracker_fpn_0", "tracker_fpn_1", "points", "point_labels"};
const std::array<const char*, 5> kTrackerDecoderOutputs = {
    "low_res_masks", "high_res_masks", "object_pointer", "object_score_logits", "iou_scores"};
const std::array<const char*, 4> kMemoryEncoderInputs = {"current", "high_res_masks",
                                                         "object_score_logits", "binarize"};
const std::array<const char*, 4> kTrackerMaskDecoderInputs = {"tracker_fpn_0", "tracker_fpn_1",
                                                              "tracker_fpn_2", "mask_inputs"};
const std::array<const char*, 4> kTrackerMaskDecoderOutputs = {
    "low_res_masks", "high_res_masks", "object_pointer", "object_score_logits"};

int ModuleSpec::inputIndex(const std::string& name) const {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

int ModuleSpec::outputIndex(const std::string& name) const {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

namespace {

[[noreturn]] void invalid(const std::string& path, const std::string& problem) {
  throw CoreError(ErrorCode::kModelLoad, "manifest.json: " + path + ": " + problem);
}

const json::Value& member(const json::Value& object, const std::string& path,
                          const std::string& key) {
  const json::Value* value = object.find(key);
  if (value == nullptr) invalid(path.empty() ? key : path + "." + key, "missing");
  return *value;
}

std::string childPath(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

const json::Value& objectField(const json::Value& parent, const std::string& path,
                               const std::string& key) {
  const json::Value& value = member(parent, path, key);
  if (!value.isObject()) invalid(childPath(path, key), "expected an object");
  return value;
}

std::string stringField(const json::Value& parent, const std::string& path,
                        const std::string& key) {
  const json::Value& value = member(parent, path, key);
  if (!value.isString()) invalid(childPath(path, key), "expected a string");
  return value.asString();
}

bool boolField(const json::Value& parent, const std::string& path, const std::string& key) {
  const json::Value& value = member(parent, path, key);
  if (!value.isBool()) invalid(childPath(path, key), "expected a boolean");
  return value.asBool();
}

int64_t integerValue(const json::Value& value, const std::string& path) {
  // 2^53: every integer below is exact in a double.
  constexpr double kLimit = 9007199254740992.0;
  if (!value.isNumber() || std::floor(value.asNumber()) != value.asNumber() ||
      std::fabs(value.asNumber()) > kLimit) {
    invalid(path, "expected an integer");
  }
  return static_cast<int64_t>(value.asNumber());
}

int64_t intField(const json::Value& parent, const std::string& path, const std::string& key) {
  return integerValue(member(parent, path, key), childPath(path, key));
}

int64_t positiveField(const json::Value& parent, const std::string& path, const std::string& key) {
  int64_t value = intField(parent, path, key);
  if (value <= 0) invalid(childPath(path, key), "expected a positive integer");
  return value;
}

int64_t nonNegativeField(const json::Value& parent, const std::string& path,
                         const std::string& key) {
  int64_t value = intField(parent, path, key);
  if (value < 0) invalid(childPath(path, key), "expected a non-negative integer");
  return value;
}

// A finite number (JSON has no NaN or infinity, but a huge literal overflows to infinity).
double finiteField(const json::Value& parent, const std::string& path, const std::string& key) {
  const json::Value& value = member(parent, path, key);
  if (!value.isNumber() || !std::isfinite(value.asNumber())) {
    invalid(childPath(path, key), "expected a finite number");
  }
  return value.asNumber();
}

std::array<float, 3> tripleField(const json::Value& parent, const std::string& key,
                                 bool positiveOnly) {
  const json::Value& value = member(parent, "", key);
  if (!value.isArray() || value.items().size() != 3) invalid(key, "expected 3 numbers");
  std::array<float, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    const json::Value& item = value.items()[i];
    if (!item.isNumber() || (positiveOnly && item.asNumber() <= 0)) {
      invalid(key, positiveOnly ? "expected 3 positive numbers" : "expected 3 numbers");
    }
    out[i] = static_cast<float>(item.asNumber());
  }
  return out;
}

bool isKnownDtype(const std::string& dtype) {
  return dtype == "float32" || dtype == "float16" || dtype == "bfloat16" || dtype == "int64";
}

std::vector<TensorSpec> tensorSpecs(const json::Value& parent, const std::string& path,
                                    const std::string& key) {
  const json::Value& list = member(parent, path, key);
  std::string listPath = childPath(path, key);
  if (!list.isArray() || list.items().empty()) invalid(listPath, "expected a non-empty array");
  std::vector<TensorSpec> specs;
  std::set<std::string> names;
  for (size_t i = 0; i < list.items().size(); ++i) {
    std::string itemPath = listPath + "[" + std::to_string(i) + "]";
    const json::Value& item = list.items()[i];
    if (!item.isObject()) invalid(itemPath, "expected an object");
    TensorSpec spec;
    spec.name = stringField(item, itemPath, "name");
    if (!names.insert(spec.name).second) invalid(itemPath, "duplicate name " + spec.name);
    spec.dtype = stringField(item, itemPath, "dtype");
    if (!isKnownDtype(spec.dtype)) invalid(itemPath + ".dtype", "unknown dtype " + spec.dtype);
    const json::Value& shape = member(item, itemPath, "shape");
    if (!shape.isArray()) invalid(itemPath + ".shape", "expected an array");
    for (size_t d = 0; d < shape.items().size(); ++d) {
      const json::Value& dim = shape.items()[d];
      std::string dimPath = itemPath + ".shape[" + std::to_string(d) + "]";
      Dimension dimension;
      if (dim.isString()) {
        if (dim.asString().empty()) invalid(dimPath, "empty symbol");
        dimension.symbol = dim.asString();
      } else {
        dimension.size = integerValue(dim, dimPath);
        if (dimension.size < 0) invalid(dimPath, "negative size");
      }
      spec.shape.push_back(dimension);
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

ModuleSpec moduleSpec(const json::Value& modules, const std::string& name) {
  const json::Value& module = objectField(modules, "modules", name);
  std::string path = "modules." + name;
  ModuleSpec spec;
  auto plainFile = [&](const char* key) {
    std::string file = stringField(module, path, key);
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos) {
      invalid(path + "." + key, "expected a plain file name inside the bundle");
    }
    return file;
  };
  spec.file = plainFile("file");
  if (module.find("compiled") != nullptr) {
    // Only the vision trunk has an ahead-of-time compiled form (tools/export_sam3.py --compile).
    if (name != "vision_trunk") invalid(path + ".compiled", "only vision_trunk is compiled");
    spec.compiledFile = plainFile("compiled");
    // The CPU instruction sets the package's native code may use (the exporting machine's).
    const json::Value& flags = member(module, path, "compiled_cpu_flags");
    std::string flagsPath = path + ".compiled_cpu_flags";
    if (!flags.isArray()) invalid(flagsPath, "expected an array of strings");
    for (const json::Value& flag : flags.items()) {
      if (!flag.isString() || flag.asString().empty()) {
        invalid(flagsPath, "expected an array of strings");
      }
      spec.compiledCpuFlags.push_back(flag.asString());
    }
  } else if (module.find("compiled_cpu_flags") != nullptr) {
    invalid(path + ".compiled_cpu_flags", "given without compiled");
  }
  spec.inputs = tensorSpecs(module, path, "inputs");
  spec.outputs = tensorSpecs(module, path, "outputs");
  return spec;
}

template <size_t N>
void requireNames(const std::vector<TensorSpec>& specs, const std::array<const char*, N>& names,
                  const std::string& path, bool exact) {
  for (const char* name : names) {
    bool found = false;
    for (const TensorSpec& spec : specs) found = found || spec.name == name;
    if (!found) invalid(path, std::string("missing ") + name);
  }
  if (exact && specs.size() != N) invalid(path, "expected exactly " + std::to_string(N));
}

// A fixed dimension of a spec must equal what the rest of the manifest says.
void requireDim(const TensorSpec& spec, size_t index, int64_t expected, const std::string& path) {
  if (spec.shape.size() <= index) invalid(path, spec.name + " has too few dimensions");
  const Dimension& dim = spec.shape[index];
  if (!dim.isSymbolic() && dim.size != expected) {
    invalid(path, spec.name + " dimension " + std::to_string(index) + " is " +
                      std::to_string(dim.size) + ", expected " + std::to_string(expected));
  }
}

const TensorSpec& specNamed(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const TensorSpec& spec : specs) {
    if (spec.name == name) return spec;
  }
  throw CoreError(ErrorCode::kInternal, "manifest spec lookup: " + name);
}

// point_decoder / point_decoder_multimask (docs/bundle-format.md): the tracker features as the
// vision encoder makes them, clicks [B, 1, N, 2] with labels [B, 1, N] int64, and K masks of
// M x M logits with K predicted IoUs.
void validatePointDecoder(const ModuleSpec& decoder, const std::string& name, int64_t K,
                          const Manifest& m) {
  const std::string inputsPath = "modules." + name + ".inputs";
  const std::string outputsPath = "modules." + name + ".outputs";
  requireNames(decoder.inputs, kPointDecoderInputs, inputsPath, true);
  requireNames(decoder.outputs, kPointDecoderOutputs, outputsPath, false);
  for (int level = 0; level < 3; ++level) {
    const std::string feature = "tracker_fpn_" + std::to_string(level);
    const TensorSpec& input = specNamed(decoder.inputs, feature);
    const TensorSpec& made = specNamed(m.visionEncoder.outputs, feature);
    if (input.shape.size() != 4) invalid(inputsPath, feature + " is 4-D");
    for (size_t d = 0; d < 4; ++d) {
      if (!made.shape[d].isSymbolic()) requireDim(input, d, made.shape[d].size, inputsPath);
    }
  }
  const TensorSpec& points = specNamed(decoder.inputs, "points");
  const TensorSpec& labels = specNamed(decoder.inputs, "point_labels");
  if (points.shape.size() != 4) invalid(inputsPath, "points is 4-D");
  if (points.dtype == "int64") invalid(inputsPath, "points must be floating point");
  requireDim(points, 1, 1, inputsPath);
  requireDim(points, 3, 2, inputsPath);
  if (labels.shape.size() != 3) invalid(inputsPath, "point_labels is 3-D");
  if (labels.dtype != "int64") invalid(inputsPath, "point_labels must be int64");
  requireDim(labels, 1, 1, inputsPath);

  const TensorSpec& masks = specNamed(decoder.outputs, "mask_logits");
  const TensorSpec& iou = specNamed(decoder.outputs, "iou_scores");
  const TensorSpec& objectScore = specNamed(decoder.outputs, "object_score_logits");
  if (masks.shape.size() != 5 || iou.shape.size() != 3 || objectScore.shape.size() != 3) {
    invalid(outputsPath, "unexpected ranks");
  }
  requireDim(masks, 1, 1, outputsPath);
  requireDim(masks, 2, K, outputsPath);
  requireDim(masks, 3, m.maskSize, outputsPath);
  requireDim(masks, 4, m.maskSize, outputsPath);
  requireDim(iou, 1, 1, outputsPath);
  requireDim(iou, 2, K, outputsPath);
}

// A spec's shape, rank and fixed sizes: `dims` holds one size per dimension, -1 for a
// dimension bound at call time (it may then be a symbol or a number).
void requireShape(const std::vector<TensorSpec>& specs, const std::string& name,
                  const std::vector<int64_t>& dims, const std::string& path) {
  const TensorSpec& spec = specNamed(specs, name);
  if (spec.shape.size() != dims.size()) {
    invalid(path, name + " is " + std::to_string(dims.size()) + "-D");
  }
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] >= 0) requireDim(spec, d, dims[d], path);
  }
}

void requireDtype(const std::vector<TensorSpec>& specs, const std::string& name,
                  const std::string& dtype, const std::string& path) {
  if (specNamed(specs, name).dtype != dtype) invalid(path, name + " must be " + dtype);
}

// The `tracker` block and its four modules (docs/video-internals.md section 1).
TrackerSpec trackerSpec(const json::Value& root, const json::Value& modules, const Manifest& m) {
  const json::Value& block = objectField(root, "", "tracker");
  TrackerSpec t;
  t.memDim = positiveField(block, "tracker", "mem_dim");
  t.numMaskmem = positiveField(block, "tracker", "num_maskmem");
  t.maxCondFramesInAttn = positiveField(block, "tracker", "max_cond_frames_in_attn");
  t.maxObjectPointers = positiveField(block, "tracker", "max_object_pointers");
  t.memorySlots = positiveField(block, "tracker", "memory_slots");
  t.pointerSlots = positiveField(block, "tracker", "pointer_slots");
  t.multimaskOutputInSam = boolField(block, "tracker", "multimask_output_in_sam");
  t.multimaskMinPtNum = intField(block, "tracker", "multimask_min_pt_num");
  t.multimaskMaxPtNum = intField(block, "tracker", "multimask_max_pt_num");
  t.multimaskOutputForTracking = boolField(block, "tracker", "multimask_output_for_tracking");
  if (t.memorySlots < t.maxCondFramesInAttn + t.numMaskmem - 1) {
    invalid("tracker.memory_slots", "must hold max_cond_frames_in_attn + num_maskmem - 1 frames");
  }
  // Every previous frame a pointer can come from, plus at least one conditioning frame.
  if (t.pointerSlots < t.maxObjectPointers) {
    invalid("tracker.pointer_slots", "must be at least max_object_pointers");
  }
  t.memoryAttention = moduleSpec(modules, "memory_attention");
  t.decoder = moduleSpec(modules, "tracker_decoder");
  t.decoderMultimask = moduleSpec(modules, "tracker_decoder_multimask");
  t.memoryEncoder = moduleSpec(modules, "memory_encoder");

  const TensorSpec& level2 = specNamed(m.visionEncoder.outputs, "tracker_fpn_2");
  if (level2.shape[1].isSymbolic()) {
    invalid(m.visionParts ? "modules.tracker_neck.outputs" : "modules.vision_encoder.outputs",
            "tracker_fpn_2 needs a fixed width");
  }
  t.hiddenSize = level2.shape[1].size;
  const int64_t C = t.hiddenSize, G = m.featureSize, R = m.resolution, M = t.memDim;
  const int64_t NS = t.memorySlots, NP = t.pointerSlots;
  if (C % M != 0 || C <= M) {
    invalid("tracker.mem_dim", "the tracker width must be a multiple of mem_dim above it");
  }

  std::string path = "modules.memory_attention.inputs";
  const ModuleSpec& attention = t.memoryAttention;
  requireNames(attention.inputs, kMemoryAttentionInputs, path, true);
  requireShape(attention.inputs, "current", {1, C, G, G}, path);
  requireShape(attention.inputs, "memory", {-1, NS, G * G, M}, path);
  requireShape(attention.inputs, "memory_tpos", {-1, NS}, path);
  requireDtype(attention.inputs, "memory_tpos", "int64", path);
  requireShape(attention.inputs, "memory_valid", {-1, NS}, path);
  requireShape(attention.inputs, "pointers", {-1, NP, C}, path);
  requireShape(attention.inputs, "pointer_offsets", {-1, NP}, path);
  requireShape(attention.inputs, "pointer_valid", {-1, NP}, path);
  // A symbolic slot dimension (NS <= memory_slots, NP <= pointer_slots per call) must be so in
  // every input that has it.
  auto flexible = [&](std::array<const char*, 3> names) {
    const bool symbolic = specNamed(attention.inputs, names[0]).shape[1].isSymbolic();
    for (const char* name : names) {
      if (specNamed(attention.inputs, name).shape[1].isSymbolic() != symbolic) {
        invalid(path, std::string(names[0]) + ", " + names[1] + " and " + names[2] +
                          " must agree on the slot dimension");
      }
    }
    return symbolic;
  };
  t.memorySlotsFlexible = flexible({"memory", "memory_tpos", "memory_valid"});
  t.pointerSlotsFlexible = flexible({"pointers", "pointer_offsets", "pointer_valid"});
  path = "modules.memory_attention.outputs";
  requireNames(attention.outputs, std::array<const char*, 1>{"conditioned"}, path, true);
  requireShape(attention.outputs, "conditioned", {-1, C, G, G}, path);

  for (const auto& [decoder, name] :
       {std::pair<const ModuleSpec*, std::string>{&t.decoder, "tracker_decoder"},
        std::pair<const ModuleSpec*, std::string>{&t.decoderMultimask,
                                                  "tracker_decoder_multimask"}}) {
    path = "modules." + name + ".inputs";
    requireNames(decoder->inputs, kTrackerDecoderInputs, path, true);
    requireShape(decoder->inputs, "conditioned", {-1, C, G, G}, path);
    requireShape(decoder->inputs, "tracker_fpn_0", {1, -1, 4 * G, 4 * G}, path);
    requireShape(decoder->inputs, "tracker_fpn_1", {1, -1, 2 * G, 2 * G}, path);
    requireShape(decoder->inputs, "points", {-1, 1, -1, 2}, path);
    requireShape(decoder->inputs, "point_labels", {-1, 1, -1}, path);
    requireDtype(decoder->inputs, "point_labels", "int64", path);
    path = "modules." + name + ".outputs";
    requireNames(decoder->outputs, kTrackerDecoderOutputs, path, false);
    requireShape(decoder->outputs, "low_res_masks", {-1, 1, 4 * G, 4 * G}, path);
    requireShape(decoder->outputs, "high_res_masks", {-1, 1, R, R}, path);
    requireShape(decoder->outputs, "object_pointer", {-1, C}, path);
    requireShape(decoder->outputs, "object_score_logits", {-1, 1}, path);
    requireShape(decoder->outputs, "iou_scores", {-1, 1}, path);
  }

  path = "modules.memory_encoder.inputs";
  const ModuleSpec& encoder = t.memoryEncoder;
  requireNames(encoder.inputs, kMemoryEncoderInputs, path, true);
  requireShape(encoder.inputs, "current", {1, C, G, G}, path);
  requireShape(encoder.inputs, "high_res_masks", {-1, 1, R, R}, path);
  requireShape(encoder.inputs, "object_score_logits", {-1, 1}, path);
  requireShape(encoder.inputs, "binarize", {1}, path);
  path = "modules.memory_encoder.outputs";
  requireNames(encoder.outputs, std::array<const char*, 1>{"memory"}, path, true);
  requireShape(encoder.outputs, "memory", {-1, G * G, M}, path);
  requireDtype(encoder.outputs, "memory", "bfloat16", path);
  return t;
}

// The `concept` block and tracker_mask_decoder (docs/bundle-format.md, docs/video-concepts.md).
ConceptSpec conceptSpec(const json::Value& root, const json::Value& modules, const Manifest& m) {
  const json::Value& block = objectField(root, "", "concept");
  const std::string p = "concept";
  ConceptSpec k;
  k.scoreThresholdDetection = finiteField(block, p, "score_threshold_detection");
  k.detNmsThresh = finiteField(block, p, "det_nms_thresh");
  k.assocIouThresh = finiteField(block, p, "assoc_iou_thresh");
  k.trkAssocIouThresh = finiteField(block, p, "trk_assoc_iou_thresh");
  k.newDetThresh = finiteField(block, p, "new_det_thresh");
  k.reconditionOnTrkMasks = boolField(block, p, "recondition_on_trk_masks");
  k.hotstartDelay = nonNegativeField(block, p, "hotstart_delay");
  k.hotstartUnmatchThresh = nonNegativeField(block, p, "hotstart_unmatch_thresh");
  k.hotstartDupThresh = nonNegativeField(block, p, "hotstart_dup_thresh");
  k.suppressUnmatchedOnlyWithinHotstart =
      boolField(block, p, "suppress_unmatched_only_within_hotstart");
  k.initTrkKeepAlive = nonNegativeField(block, p, "init_trk_keep_alive");
  k.maxTrkKeepAlive = nonNegativeField(block, p, "max_trk_keep_alive");
  k.minTrkKeepAlive = intField(block, p, "min_trk_keep_alive");  // -1 in the real config
  k.suppressOverlappingBasedOnRecentOcclusionThreshold =
      finiteField(block, p, "suppress_overlapping_based_on_recent_occlusion_threshold");
  k.decreaseTrkKeepAliveForEmptyMasklets =
      boolField(block, p, "decrease_trk_keep_alive_for_empty_masklets");
  k.fillHoleArea = nonNegativeField(block, p, "fill_hole_area");
  k.maxNumObjects = nonNegativeField(block, p, "max_num_objects");
  k.reconditionEveryNthFrame = nonNegativeField(block, p, "recondition_every_nth_frame");
  k.highConfThresh = finiteField(block, p, "high_conf_thresh");
  k.highIouThresh = finiteField(block, p, "high_iou_thresh");
  k.lowResMaskSize = positiveField(block, p, "low_res_mask_size");
  const int64_t G = m.featureSize, R = m.resolution;
  if (k.lowResMaskSize != 4 * G) {
    invalid("concept.low_res_mask_size",
            "is " + std::to_string(k.lowResMaskSize) +
                ", expected 4 x feature_size = " + std::to_string(4 * G));
  }

  k.maskDecoder = moduleSpec(modules, "tracker_mask_decoder");
  const int64_t C = m.tracker->hiddenSize;
  std::string path = "modules.tracker_mask_decoder.inputs";
  const ModuleSpec& decoder = k.maskDecoder;
  requireNames(decoder.inputs, kTrackerMaskDecoderInputs, path, true);
  for (int level = 0; level < 3; ++level) {
    const std::string feature = "tracker_fpn_" + std::to_string(level);
    const TensorSpec& made = specNamed(m.visionEncoder.outputs, feature);
    std::vector<int64_t> dims;
    for (const Dimension& dim : made.shape) dims.push_back(dim.isSymbolic() ? -1 : dim.size);
    dims[0] = 1;
    requireShape(decoder.inputs, feature, dims, path);
  }
  requireShape(decoder.inputs, "mask_inputs", {-1, 1, 4 * G, 4 * G}, path);
  requireDtype(decoder.inputs, "mask_inputs", "float32", path);
  path = "modules.tracker_mask_decoder.outputs";
  requireNames(decoder.outputs, kTrackerMaskDecoderOutputs, path, true);
  requireShape(decoder.outputs, "low_res_masks", {-1, 1, 4 * G, 4 * G}, path);
  requireShape(decoder.outputs, "high_res_masks", {-1, 1, R, R}, path);
  requireShape(decoder.outputs, "object_pointer", {-1, C}, path);
  requireShape(decoder.outputs, "object_score_logits", {-1, 1}, path);

  // Concept tracking encodes the tracker's 4G x 4G low-res masks: the memory encoder must
  // take them (format 3 declares its mask side symbolic).
  const TensorSpec& masks = specNamed(m.tracker->memoryEncoder.inputs, "high_res_masks");
  if (!masks.shape[2].isSymbolic() || !masks.shape[3].isSymbolic()) {
    invalid("modules.memory_encoder.inputs",
            "high_res_masks needs symbolic sides for concept tracking's low-res masks");
  }
  return k;
}

// Format 4's three vision modules: the trunk's vision_features [B, G*G, C] feed both necks
// (the same spec), the detector's neck makes fpn_0..2 and the tracker's tracker_fpn_0..2.
VisionParts visionParts(const json::Value& modules, const Manifest& m) {
  VisionParts parts{moduleSpec(modules, "vision_trunk"), moduleSpec(modules, "detector_neck"),
                    moduleSpec(modules, "tracker_neck")};
  const std::vector<TensorSpec>& features = parts.trunk.outputs;
  if (features.size() != 1 || features[0].name != kVisionFeatures) {
    invalid("modules.vision_trunk.outputs", "expected exactly [vision_features]");
  }
  const TensorSpec& spec = features[0];
  if (spec.shape.size() != 3 || !spec.shape[0].isSymbolic() || spec.shape[2].isSymbolic()) {
    invalid("modules.vision_trunk.outputs", "vision_features is [B, G*G, C] with a fixed C");
  }
  requireDim(spec, 1, m.featureSize * m.featureSize, "modules.vision_trunk.outputs");
  const std::pair<const ModuleSpec*, const char*> necks[] = {{&parts.detectorNeck, "detector_neck"},
                                                             {&parts.trackerNeck, "tracker_neck"}};
  for (const auto& [neck, name] : necks) {
    const std::string path = std::string("modules.") + name + ".inputs";
    if (neck->inputs.size() != 1 || neck->inputs[0].name != kVisionFeatures) {
      invalid(path, "expected exactly [vision_features]");
    }
    const TensorSpec& input = neck->inputs[0];
    bool same = input.dtype == spec.dtype && input.shape.size() == spec.shape.size();
    for (size_t d = 0; same && d < spec.shape.size(); ++d) {
      same = input.shape[d].size == spec.shape[d].size &&
             input.shape[d].symbol == spec.shape[d].symbol;
    }
    if (!same) invalid(path, "vision_features must match modules.vision_trunk.outputs");
  }
  requireNames(parts.detectorNeck.outputs,
               std::array<const char*, 3>{kVisionEncoderOutputs[0], kVisionEncoderOutputs[1],
                                          kVisionEncoderOutputs[2]},
               "modules.detector_neck.outputs", true);
  requireNames(parts.trackerNeck.outputs,
               std::array<const char*, 3>{kVisionEncoderOutputs[3], kVisionEncoderOutputs[4],
                                          kVisionEncoderOutputs[5]},
               "modules.tracker_neck.outputs", true);
  return parts;
}

}  // namespace

Manifest parseManifest(const std::string& text) {
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const json::ParseError& e) {
    throw CoreError(ErrorCode::kModelLoad, std::string("manifest.json: ") + e.what());
  }
  if (!root.isObject()) invalid("(root)", "expected an object");

  Manifest m;
  if (stringField(root, "", "format") != "sam3-bundle")
    invalid("format", "expected \"sam3-bundle\"");
  m.formatVersion = intField(root, "", "format_version");
  // Version 2 adds the optional video tracker, version 3 concept tracking, version 4 splits
  // the vision encoder into its trunk and two necks; the other fields are the same in all.
  if (m.formatVersion < 1 || m.formatVersion > 4) {
    invalid("format_version", "unsupported version " + std::to_string(m.formatVersion) +
                                  " (this build reads 1 to 4)");
  }

  const json::Value& model = objectField(root, "", "model");
  m.modelId = stringField(model, "model", "id");
  m.randomWeights = boolField(model, "model", "random_weights");
  const json::Value& seed = member(model, "model", "seed");
  if (!seed.isNull()) m.seed = integerValue(seed, "model.seed");
  m.checksum = stringField(model, "model", "checksum");

  const json::Value& versions = objectField(root, "", "versions");
  m.torchVersion = stringField(versions, "versions", "torch");
  m.transformersVersion = stringField(versions, "versions", "transformers");
  m.exporterVersion = intField(versions, "versions", "exporter");

  m.deviceType = stringField(root, "", "device_type");
  if (m.deviceType != "cpu" && m.deviceType != "cuda")
    invalid("device_type", "expected cpu or cuda");
  m.dtype = stringField(root, "", "dtype");
  if (m.dtype != "float32" && m.dtype != "float16" && m.dtype != "bfloat16") {
    invalid("dtype", "expected float32, float16 or bfloat16");
  }
  m.resolution = positiveField(root, "", "resolution");
  m.patchSize = positiveField(root, "", "patch_size");
  m.imageMean = tripleField(root, "image_mean", false);
  m.imageStd = tripleField(root, "image_std", true);
  m.featureSize = positiveField(root, "", "feature_size");
  m.maskSize = positiveField(root, "", "mask_size");
  m.hiddenSize = positiveField(root, "", "hidden_size");
  m.numQueries = positiveField(root, "", "num_queries");

  const json::Value& textSection = objectField(root, "", "text");
  m.text.contextLength = positiveField(textSection, "text", "context_length");
  m.text.vocabFile = stringField(textSection, "text", "vocab_file");
  m.text.vocabSize = positiveField(textSection, "text", "vocab_size");
  m.text.bosId = intField(textSection, "text", "bos_id");
  m.text.eosId = intField(textSection, "text", "eos_id");
  m.text.padId = intField(textSection, "text", "pad_id");
  for (int64_t id : {m.text.bosId, m.text.eosId, m.text.padId}) {
    if (id < 0 || id >= m.text.vocabSize) invalid("text", "token id outside the vocabulary");
  }

  const json::Value& modules = objectField(root, "", "modules");
  if (m.formatVersion >= 4) {
    m.visionParts = visionParts(modules, m);
    m.visionEncoder.inputs = m.visionParts->trunk.inputs;
    m.visionEncoder.outputs = m.visionParts->detectorNeck.outputs;
    for (const TensorSpec& spec : m.visionParts->trackerNeck.outputs) {
      m.visionEncoder.outputs.push_back(spec);
    }
  } else {
    m.visionEncoder = moduleSpec(modules, "vision_encoder");
  }
  m.textEncoder = moduleSpec(modules, "text_encoder");
  m.detector = moduleSpec(modules, "detector");
  m.pointDecoder = moduleSpec(modules, "point_decoder");
  m.pointDecoderMultimask = moduleSpec(modules, "point_decoder_multimask");

  // Signatures (docs/bundle-format.md): names must be present; fixed sizes must agree with
  // the top-level fields the core relies on.
  const int64_t R = m.resolution, L = m.text.contextLength, D = m.hiddenSize;
  const int64_t Q = m.numQueries, M = m.maskSize;
  // Where a format-4 bundle declares the encoder's interface: the trunk's input; the necks'
  // outputs (their names are checked above, so a wrong rank names either neck).
  const std::string inputsPath =
      m.visionParts ? "modules.vision_trunk.inputs" : "modules.vision_encoder.inputs";
  const std::string outputsPath =
      m.visionParts ? "modules.{detector,tracker}_neck.outputs" : "modules.vision_encoder.outputs";
  if (m.visionEncoder.inputs.size() != 1 || m.visionEncoder.inputs[0].name != "pixel_values") {
    invalid(inputsPath, "expected exactly [pixel_values]");
  }
  const TensorSpec& pixels = m.visionEncoder.inputs[0];
  if (pixels.shape.size() != 4) invalid(inputsPath, "pixel_values is 4-D");
  requireDim(pixels, 1, 3, inputsPath);
  requireDim(pixels, 2, R, inputsPath);
  requireDim(pixels, 3, R, inputsPath);
  requireNames(m.visionEncoder.outputs, kVisionEncoderOutputs, outputsPath, false);
  for (const char* name : kVisionEncoderOutputs) {
    const TensorSpec& spec = specNamed(m.visionEncoder.outputs, name);
    if (spec.shape.size() != 4) invalid(outputsPath, spec.name + " is 4-D");
  }

  requireNames(m.textEncoder.inputs, std::array<const char*, 2>{"input_ids", "attention_mask"},
               "modules.text_encoder.inputs", true);
  for (const TensorSpec& spec : m.textEncoder.inputs) {
    if (spec.shape.size() != 2) invalid("modules.text_encoder.inputs", spec.name + " is 2-D");
    requireDim(spec, 1, L, "modules.text_encoder.inputs");
  }
  requireNames(m.textEncoder.outputs, std::array<const char*, 1>{"text_features"},
               "modules.text_encoder.outputs", false);
  const TensorSpec& features = specNamed(m.textEncoder.outputs, "text_features");
  if (features.shape.size() != 3) invalid("modules.text_encoder.outputs", "text_features is 3-D");
  requireDim(features, 1, L, "modules.text_encoder.outputs");
  requireDim(features, 2, D, "modules.text_encoder.outputs");

  requireNames(m.detector.inputs, kDetectorInputs, "modules.detector.inputs", true);
  requireNames(m.detector.outputs, kDetectorOutputs, "modules.detector.outputs", false);
  const TensorSpec& logits = specNamed(m.detector.outputs, "pred_logits");
  const TensorSpec& boxes = specNamed(m.detector.outputs, "pred_boxes");
  const TensorSpec& presence = specNamed(m.detector.outputs, "presence_logits");
  const TensorSpec& masks = specNamed(m.detector.outputs, "pred_masks");
  if (logits.shape.size() != 2 || boxes.shape.size() != 3 || presence.shape.size() != 2 ||
      masks.shape.size() != 4) {
    invalid("modules.detector.outputs", "unexpected ranks");
  }
  requireDim(logits, 1, Q, "modules.detector.outputs");
  requireDim(boxes, 1, Q, "modules.detector.outputs");
  requireDim(boxes, 2, 4, "modules.detector.outputs");
  requireDim(presence, 1, 1, "modules.detector.outputs");
  requireDim(masks, 1, Q, "modules.detector.outputs");
  requireDim(masks, 2, M, "modules.detector.outputs");
  requireDim(masks, 3, M, "modules.detector.outputs");

  validatePointDecoder(m.pointDecoder, "point_decoder", 1, m);
  validatePointDecoder(m.pointDecoderMultimask, "point_decoder_multimask", 3, m);
  if (m.formatVersion >= 2 && root.find("tracker") != nullptr) {
    m.tracker = trackerSpec(root, modules, m);
  }
  if (m.formatVersion >= 3 && root.find("concept") != nullptr) {
    if (!m.tracker) invalid("concept", "requires the tracker block");
    m.concept = conceptSpec(root, modules, m);
  }
  return m;
}

}  // namespace sam3
