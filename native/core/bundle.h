// A loaded model bundle: the validated manifest and its TorchScript modules on one device.
// Internal to native/core (includes LibTorch).
#pragma once

#include <torch/script.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "manifest.h"

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace sam3 {

enum class ModuleKind {
  kVisionEncoder,  // formats 1 to 3: the trunk and both necks in one module
  // Format 4 (manifest.visionParts): the same computation in three modules.
  kVisionTrunk,
  kDetectorNeck,
  kTrackerNeck,
  kTextEncoder,
  kDetector,
  kPointDecoder,           // one mask per prompt
  kPointDecoderMultimask,  // three masks per prompt (ambiguous single clicks)
  // The video tracker (manifest.tracker; absent from image-only bundles).
  kMemoryAttention,
  kTrackerDecoder,
  kTrackerDecoderMultimask,
  kMemoryEncoder,
  // Concept tracking (manifest.concept; format 3): a detection's mask as the tracker's output.
  kTrackerMaskDecoder,
};

using NamedTensors = std::unordered_map<std::string, at::Tensor>;
// Sizes of symbolic dimensions ("B", "NB", "N") for one call.
using SymbolSizes = std::map<std::string, int64_t>;

class Bundle {
 public:
  // Reads manifest.json in `dir`, loads each module onto `device`, and checks each module's
  // forward arity against the manifest. Call on the executor thread. Throws
  // CoreError(MODEL_LOAD) with messages that name the bundle by its directory name only.
  // `compiled`: the vision trunk runs as its AOTInductor package (manifest `compiled`), which
  // must exist and suit this device and CPU.
  static std::shared_ptr<Bundle> load(const std::string& dir, const c10::Device& device,
                                      bool compiled = false);
  ~Bundle();

  const Manifest& manifest() const { return manifest_; }
  // Unique per load in this process: embeddings remember which bundle made them.
  uint64_t id() const { return id_; }
  const c10::Device& device() const { return device_; }
  // Whether the vision encoder is split into trunk and necks (format 4): callers run the parts
  // they need (vision.h); otherwise kVisionEncoder computes all six maps.
  bool hasVisionParts() const { return manifest_.visionParts.has_value(); }
  // Whether the tracker modules are loaded (video sessions need them).
  bool hasTracker() const { return manifest_.tracker.has_value(); }
  // Whether concept tracking's module and configuration are loaded (text prompts in video).
  bool hasConcept() const { return manifest_.concept.has_value(); }
  // memory_attention's no_memory_embedding [1, 1, C]: added to the features of an initial
  // conditioning frame instead of attending to memories. Defined when hasTracker().
  const at::Tensor& noMemoryEmbedding() const { return noMemoryEmbedding_; }

  // Calls a module with inputs named as in the manifest (each cast to its spec's dtype and
  // checked against its spec's shape) and returns the outputs by manifest name, checked the
  // same way. A shape mismatch is an INTERNAL error: the bundle and the manifest disagree.
  NamedTensors call(ModuleKind kind, const NamedTensors& inputs, SymbolSizes symbols);

 private:
  Bundle() = default;
  // The format-4 vision modules; INTERNAL for a bundle of one vision encoder.
  const VisionParts& visionParts() const;
  // The tracker block; INTERNAL when the bundle has none.
  const TrackerSpec& trackerSpec() const;

  Manifest manifest_;
  c10::Device device_{c10::kCPU};
  uint64_t id_ = 0;
  std::string name_;  // the directory's base name, for messages
  torch::jit::Module visionEncoder_;
  torch::jit::Module visionTrunk_;
  // The trunk's AOTInductor package, when loaded `compiled` (visionTrunk_ is then not loaded).
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> compiledTrunk_;
  torch::jit::Module detectorNeck_;
  torch::jit::Module trackerNeck_;
  torch::jit::Module textEncoder_;
  torch::jit::Module detector_;
  torch::jit::Module pointDecoder_;
  torch::jit::Module pointDecoderMultimask_;
  torch::jit::Module memoryAttention_;
  torch::jit::Module trackerDecoder_;
  torch::jit::Module trackerDecoderMultimask_;
  torch::jit::Module memoryEncoder_;
  torch::jit::Module trackerMaskDecoder_;
  at::Tensor noMemoryEmbedding_;
};

c10::ScalarType scalarTypeOf(const std::string& dtype);

}  // namespace sam3
