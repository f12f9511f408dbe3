// manifest.json of a model bundle (docs/bundle-format.md), parsed and validated. Pure C++.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sam3 {

// One dimension of a tensor shape: a fixed size, or a symbol such as "B" (batch) or "NB"
// (boxes per prompt) bound at call time.
struct Dimension {
  int64_t size = -1;   // >= 0 when fixed
  std::string symbol;  // non-empty when symbolic
  bool isSymbolic() const { return !symbol.empty(); }
};

struct TensorSpec {
  std::string name;
  std::vector<Dimension> shape;
  std::string dtype;  // float32 | float16 | bfloat16 | int64
};

struct ModuleSpec {
  std::string file;  // a plain file name inside the bundle directory
  // Optional (exporter 8, --compile): an AOTInductor package of the same computation, with the
  // same inputs and outputs, which an engine loaded with `compiled` runs instead, and the CPU
  // instruction sets (/proc/cpuinfo flags) of the machine that compiled it, which its native
  // code may use.
  std::string compiledFile;
  std::vector<std::string> compiledCpuFlags;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;

  // Position of the named input/output, or -1.
  int inputIndex(const std::string& name) const;
  int outputIndex(const std::string& name) const;
};

struct TextSpec {
  int64_t contextLength = 0;
  std::string vocabFile;
  int64_t vocabSize = 0;
  int64_t bosId = 0;
  int64_t eosId = 0;
  int64_t padId = 0;
};

// The video tracker's configuration (manifest `tracker` block, bundle format 2) and its
// modules (docs/video-internals.md section 1).
struct TrackerSpec {
  int64_t hiddenSize = 0;  // C: width of tracker_fpn_2 and of the object pointers
  int64_t memDim = 0;      // M: width of a spatial memory token
  int64_t numMaskmem = 0;  // spatial memories: conditioning frames + the num_maskmem - 1 previous
  int64_t maxCondFramesInAttn = 0;
  int64_t maxObjectPointers = 0;
  int64_t memorySlots = 0;   // NS: memory frames one memory_attention call takes (at most)
  int64_t pointerSlots = 0;  // NP: object pointers one memory_attention call takes (at most)
  // The module's slot dimension is symbolic: a call may pass fewer slots than the maximum.
  bool memorySlotsFlexible = false;
  bool pointerSlotsFlexible = false;
  bool multimaskOutputInSam = true;
  int64_t multimaskMinPtNum = 0;
  int64_t multimaskMaxPtNum = 1;
  bool multimaskOutputForTracking = true;
  ModuleSpec memoryAttention;
  ModuleSpec decoder;           // one mask (stability fallback inside)
  ModuleSpec decoderMultimask;  // three masks, the best predicted IoU wins inside
  ModuleSpec memoryEncoder;
};

// Concept tracking's configuration (manifest `concept` block, bundle format 3): the thresholds
// of transformers' Sam3VideoConfig under their own names (docs/video-concepts.md), and the
// module that enters a detection into the tracker as a mask.
struct ConceptSpec {
  double scoreThresholdDetection = 0.5, detNmsThresh = 0.1, assocIouThresh = 0.1,
         trkAssocIouThresh = 0.5, newDetThresh = 0.7;
  bool reconditionOnTrkMasks = true;
  int64_t hotstartDelay = 15, hotstartUnmatchThresh = 8, hotstartDupThresh = 8;
  bool suppressUnmatchedOnlyWithinHotstart = true;
  int64_t initTrkKeepAlive = 30, maxTrkKeepAlive = 30, minTrkKeepAlive = -1;
  double suppressOverlappingBasedOnRecentOcclusionThreshold = 0.7;
  bool decreaseTrkKeepAliveForEmptyMasklets = false;
  int64_t fillHoleArea = 16, maxNumObjects = 10000, reconditionEveryNthFrame = 16;
  double highConfThresh = 0.8, highIouThresh = 0.8;
  int64_t lowResMaskSize = 288;  // 4G: the side of the tracker's low-res masks
  ModuleSpec maskDecoder;        // tracker_mask_decoder
};

// Bundle format 4 splits the vision encoder in three: the ViT trunk (pixel_values ->
// vision_features [B, G*G, C]) and the two necks that read its output, so that a caller runs
// only the neck it needs.
struct VisionParts {
  ModuleSpec trunk;         // pixel_values -> vision_features
  ModuleSpec detectorNeck;  // vision_features -> fpn_0..2
  ModuleSpec trackerNeck;   // vision_features -> tracker_fpn_0..2
};

struct Manifest {
  int64_t formatVersion = 0;
  std::string modelId;
  bool randomWeights = false;
  std::optional<int64_t> seed;
  std::string checksum;
  std::string torchVersion;
  std::string transformersVersion;
  int64_t exporterVersion = 0;
  std::string deviceType;  // "cpu" | "cuda": the device type the graphs were traced on
  std::string dtype;
  int64_t resolution = 0;  // square model input side R, pixels
  int64_t patchSize = 0;
  std::array<float, 3> imageMean{};
  std::array<float, 3> imageStd{};
  int64_t featureSize = 0;  // side G of the coarsest FPN map
  int64_t maskSize = 0;     // side M of the detector's mask logits
  int64_t hiddenSize = 0;   // detector width D
  int64_t numQueries = 0;   // Q
  TextSpec text;
  // The vision encoder's interface, pixel_values -> the six maps. Formats 1 to 3: the module
  // itself. Format 4: the trunk's input and the two necks' outputs, with no file of its own
  // (`visionParts` holds the modules).
  ModuleSpec visionEncoder;
  std::optional<VisionParts> visionParts;  // format 4
  ModuleSpec textEncoder;
  ModuleSpec detector;
  // Interactive decoding on the tracker features: K = 1 and K = 3 masks.
  ModuleSpec pointDecoder;
  ModuleSpec pointDecoderMultimask;
  // Present when the bundle carries the video tracker (format 2); images work without it.
  std::optional<TrackerSpec> tracker;
  // Present when the bundle carries concept tracking (format 3, requires `tracker`): text
  // prompts in video.
  std::optional<ConceptSpec> concept;
};

// Names the modules must expose (docs/bundle-format.md, "Module signatures").
extern const std::array<const char*, 6> kVisionEncoderOutputs;
extern const char* const kVisionFeatures;  // the trunk's output, the necks' input
extern const std::array<const char*, 7> kDetectorInputs;
extern const std::array<const char*, 4> kDetectorOutputs;
extern const std::array<const char*, 5> kPointDecoderInputs;
extern const std::array<const char*, 3> kPointDecoderOutputs;
extern const std::array<const char*, 7> kMemoryAttentionInputs;
extern const std::array<const char*, 5> kTrackerDecoderInputs;
extern const std::array<const char*, 5> kTrackerDecoderOutputs;
extern const std::array<const char*, 4> kMemoryEncoderInputs;
extern const std::array<const char*, 4> kTrackerMaskDecoderInputs;
extern const std::array<const char*, 4> kTrackerMaskDecoderOutputs;

// Parses and validates manifest.json text. Throws CoreError(MODEL_LOAD) naming the offending
// field (e.g. "manifest.json: modules.detector.inputs[3].shape: expected an array").
Manifest parseManifest(const std::string& text);

}  // namespace sam3
