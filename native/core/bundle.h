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

namespace sam3 {

enum class ModuleKind {
  kVisionEncoder,
  kTextEncoder,
  kDetector,
  kPointDecoder,           // one mask per prompt
  kPointDecoderMultimask,  // three masks per prompt (ambiguous single clicks)
};

using NamedTensors = std::unordered_map<std::string, at::Tensor>;
// Sizes of symbolic dimensions ("B", "NB", "N") for one call.
using SymbolSizes = std::map<std::string, int64_t>;

class Bundle {
 public:
  // Reads manifest.json in `dir`, loads each module onto `device`, and checks each module's
  // forward arity against the manifest. Call on the executor thread. Throws
  // CoreError(MODEL_LOAD) with messages that name the bundle by its directory name only.
  static std::shared_ptr<Bundle> load(const std::string& dir, const c10::Device& device);

  const Manifest& manifest() const { return manifest_; }
  // Unique per load in this process: embeddings remember which bundle made them.
  uint64_t id() const { return id_; }
  const c10::Device& device() const { return device_; }

  // Calls a module with inputs named as in the manifest (each cast to its spec's dtype and
  // checked against its spec's shape) and returns the outputs by manifest name, checked the
  // same way. A shape mismatch is an INTERNAL error: the bundle and the manifest disagree.
  NamedTensors call(ModuleKind kind, const NamedTensors& inputs, SymbolSizes symbols);

 private:
  Bundle() = default;

  Manifest manifest_;
  c10::Device device_{c10::kCPU};
  uint64_t id_ = 0;
  std::string name_;  // the directory's base name, for messages
  torch::jit::Module visionEncoder_;
  torch::jit::Module textEncoder_;
  torch::jit::Module detector_;
  torch::jit::Module pointDecoder_;
  torch::jit::Module pointDecoderMultimask_;
};

c10::ScalarType scalarTypeOf(const std::string& dtype);

}  // namespace sam3
