#include "bundle.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "errors.h"

namespace sam3 {

namespace fs = std::filesystem;

c10::ScalarType scalarTypeOf(const std::string& dtype) {
  if (dtype == "float32") return at::kFloat;
  if (dtype == "float16") return at::kHalf;
  if (dtype == "bfloat16") return at::kBFloat16;
  if (dtype == "int64") return at::kLong;
  throw CoreError(ErrorCode::kInternal, "unknown dtype " + dtype);
}

namespace {

std::atomic<uint64_t> nextBundleId{1};

// LibTorch messages can quote the absolute path of a file; callers only see the bundle name.
std::string withoutHostPath(std::string message, const std::string& absoluteDir,
                            const std::string& name) {
  if (absoluteDir.empty()) return message;
  for (size_t at = message.find(absoluteDir); at != std::string::npos;
       at = message.find(absoluteDir, at + name.size())) {
    message.replace(at, absoluteDir.size(), name);
  }
  return message;
}

std::string firstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

const char* moduleName(ModuleKind kind) {
  switch (kind) {
    case ModuleKind::kVisionEncoder:
      return "vision_encoder";
    case ModuleKind::kVisionTrunk:
      return "vision_trunk";
    case ModuleKind::kDetectorNeck:
      return "detector_neck";
    case ModuleKind::kTrackerNeck:
      return "tracker_neck";
    case ModuleKind::kTextEncoder:
      return "text_encoder";
    case ModuleKind::kDetector:
      return "detector";
    case ModuleKind::kPointDecoder:
      return "point_decoder";
    case ModuleKind::kPointDecoderMultimask:
      return "point_decoder_multimask";
    case ModuleKind::kMemoryAttention:
      return "memory_attention";
    case ModuleKind::kTrackerDecoder:
      return "tracker_decoder";
    case ModuleKind::kTrackerDecoderMultimask:
      return "tracker_decoder_multimask";
    case ModuleKind::kMemoryEncoder:
      return "memory_encoder";
    case ModuleKind::kTrackerMaskDecoder:
      return "tracker_mask_decoder";
  }
  return "module";
}

std::string shapeString(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

// Checks a tensor against its spec, binding unbound symbols on first sight.
void checkShape(const at::Tensor& tensor, const TensorSpec& spec, SymbolSizes& symbols,
                const char* module, const char* role) {
  bool matches = tensor.dim() == static_cast<int64_t>(spec.shape.size());
  for (size_t d = 0; matches && d < spec.shape.size(); ++d) {
    const Dimension& dim = spec.shape[d];
    int64_t actual = tensor.size(static_cast<int64_t>(d));
    if (!dim.isSymbolic()) {
      matches = actual == dim.size;
    } else {
      auto bound = symbols.find(dim.symbol);
      if (bound == symbols.end()) {
        symbols[dim.symbol] = actual;
      } else {
        matches = bound->second == actual;
      }
    }
  }
  if (!matches) {
    throw CoreError(ErrorCode::kInternal, std::string(module) + " " + role + " " + spec.name +
                                              " has shape " + shapeString(tensor.sizes()) +
                                              ", which the manifest does not allow");
  }
}

torch::jit::Module loadModule(const fs::path& dir, const std::string& bundleName,
                              const ModuleSpec& spec, const char* name, const c10::Device& device) {
  fs::path file = dir / spec.file;
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + bundleName + "': " + spec.file + " (" + name + ") is missing");
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(file.string(), device);
  } catch (const c10::Error& e) {
    throw CoreError(
        ErrorCode::kModelLoad,
        "bundle '" + bundleName + "': " + spec.file + " is not a loadable " +
            "TorchScript module: " +
            withoutHostPath(firstLine(e.what_without_backtrace()), dir.string(), bundleName));
  }
  module.eval();
  auto forward = module.find_method("forward");
  if (!forward) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + bundleName + "': " + spec.file + " has no forward method");
  }
  // The schema's first argument is `self`.
  size_t arity = forward->function().getSchema().arguments().size() - 1;
  if (arity != spec.inputs.size()) {
    throw CoreError(ErrorCode::kModelLoad, "bundle '" + bundleName + "': " + spec.file +
                                               " forward takes " + std::to_string(arity) +
                                               " inputs, the manifest lists " +
                                               std::to_string(spec.inputs.size()));
  }
  return module;
}

// The instruction-set flags of this machine's CPU: the "flags" line of /proc/cpuinfo (none
// where there is no such line).
std::set<std::string> hostCpuFlags() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0 || line.find(':') == std::string::npos) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string flag; words >> flag;) flags.insert(flag);
    return flags;
  }
  return {};
}

// What `error` says, without its backtrace.
std::string messageOf(const std::exception& error) {
  if (const auto* c10Error = dynamic_cast<const c10::Error*>(&error)) {
    return c10Error->what_without_backtrace();
  }
  return error.what();
}

// An AOTInductor package (tools/export_sam3.py --compile), refused before any of its native
// code is loaded when its metadata says it was built for another device type, or when it was
// compiled on a CPU with instruction sets this one lacks (-march=native: its code would stop
// the process with an illegal instruction).
std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loadCompiled(const fs::path& dir,
                                                                      const std::string& bundleName,
                                                                      const ModuleSpec& spec,
                                                                      const char* name,
                                                                      const c10::Device& device) {
  if (spec.compiledFile.empty()) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + bundleName + "' has no compiled " + name +
                        ": export it with tools/export_sam3.py --compile, or load it uncompiled");
  }
  fs::path file = dir / spec.compiledFile;
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw CoreError(ErrorCode::kModelLoad, "bundle '" + bundleName + "': " + spec.compiledFile +
                                               " (compiled " + name + ") is missing");
  }
  auto notLoadable = [&](const std::exception& error) {
    return CoreError(ErrorCode::kModelLoad,
                     "bundle '" + bundleName + "': " + spec.compiledFile +
                         " is not a loadable AOTInductor package: " +
                         withoutHostPath(firstLine(messageOf(error)), dir.string(), bundleName));
  };
  std::unordered_map<std::string, std::string> metadata;
  try {
    metadata =
        torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(file.string(), "model");
  } catch (const std::exception& e) {
    throw notLoadable(e);
  }
  const std::string deviceType = device.is_cuda() ? "cuda" : "cpu";
  const std::string packageDevice = metadata["AOTI_DEVICE_KEY"];
  if (packageDevice != deviceType) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + bundleName + "': " + spec.compiledFile + " was compiled for " +
                        (packageDevice.empty() ? "?" : packageDevice) + ", not " + deviceType);
  }
  // A CUDA package's host code is compiled the same way, so this holds for both device types.
  std::set<std::string> host = hostCpuFlags();
  std::string missing;
  for (const std::string& flag : spec.compiledCpuFlags) {
    if (host.count(flag) == 0) missing += (missing.empty() ? "" : " ") + flag;
  }
  if (!missing.empty()) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + bundleName + "': " + spec.compiledFile +
                        " was compiled on a CPU with instructions this one lacks (" + missing +
                        "): compile it on this machine (tools/export_sam3.py --compile)");
  }
  try {
    return std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        file.string(), "model", false, 1, device.is_cuda() ? device.index() : -1);
  } catch (const std::exception& e) {
    throw notLoadable(e);
  }
}

// A TorchScript module's result (a tensor, a tuple or a list of tensors) as tensors.
void appendOutputs(const c10::IValue& result, const char* name, std::vector<at::Tensor>& outputs) {
  if (result.isTensor()) {
    outputs.push_back(result.toTensor());
  } else if (result.isTuple()) {
    for (const c10::IValue& item : result.toTupleRef().elements()) {
      if (!item.isTensor()) {
        throw CoreError(ErrorCode::kInternal, std::string(name) + " returned a non-tensor");
      }
      outputs.push_back(item.toTensor());
    }
  } else if (result.isTensorList()) {
    for (const at::Tensor& tensor : result.toTensorVector()) outputs.push_back(tensor);
  } else {
    throw CoreError(ErrorCode::kInternal, std::string(name) + " returned an unexpected type");
  }
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  if (!in.good() && !in.eof()) throw std::runtime_error("read failed");
  return content.str();
}

}  // namespace

Bundle::~Bundle() = default;

std::shared_ptr<Bundle> Bundle::load(const std::string& dir, const c10::Device& device,
                                     bool compiled) {
  std::error_code ec;
  fs::path path = fs::absolute(fs::path(dir), ec).lexically_normal();
  std::string name =
      path.has_filename() ? path.filename().string() : path.parent_path().filename().string();
  if (dir.empty() || !fs::is_directory(path, ec)) {
    throw CoreError(ErrorCode::kModelLoad, "bundle directory '" + name + "' does not exist");
  }
  fs::path manifestPath = path / "manifest.json";
  if (!fs::is_regular_file(manifestPath, ec)) {
    throw CoreError(ErrorCode::kModelLoad, "bundle '" + name + "' has no manifest.json");
  }
  std::string text;
  try {
    text = readFile(manifestPath);
  } catch (const std::exception&) {
    throw CoreError(ErrorCode::kModelLoad, "bundle '" + name + "': cannot read manifest.json");
  }

  // Run the traced graphs as exported. The profiling executor's optimizing passes cost seconds
  // on the first calls of each new input shape (batch sizes vary per request) and, measured on
  // CPU, gain nothing in steady state. The setting belongs to the calling (executor) thread.
  torch::jit::setGraphExecutorOptimize(false);

  std::shared_ptr<Bundle> bundle(new Bundle());
  try {
    bundle->manifest_ = parseManifest(text);
  } catch (const CoreError& e) {
    throw CoreError(ErrorCode::kModelLoad, "bundle '" + name + "': " + e.what());
  }
  bundle->device_ = device;
  // A trace bakes the devices of the tensors it creates: graphs traced on one device type fail
  // on another midway through a request. Refuse at load, with the fix.
  const std::string servingType = device.is_cuda() ? "cuda" : "cpu";
  if (bundle->manifest_.deviceType != servingType) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + name + "' was exported for " + bundle->manifest_.deviceType +
                        " and cannot run on " + device.str() +
                        ": export it again with tools/export_sam3.py --device " +
                        (servingType == "cuda" ? device.str() : std::string("cpu")));
  }
  bundle->name_ = name;
  bundle->id_ = nextBundleId.fetch_add(1);
  const Manifest& m = bundle->manifest_;
  if (m.visionParts) {
    const VisionParts& parts = *m.visionParts;
    // The package holds its own weights: the TorchScript trunk is not loaded beside it.
    if (compiled) {
      bundle->compiledTrunk_ = loadCompiled(path, name, parts.trunk, "vision_trunk", device);
    } else {
      bundle->visionTrunk_ = loadModule(path, name, parts.trunk, "vision_trunk", device);
    }
    bundle->detectorNeck_ = loadModule(path, name, parts.detectorNeck, "detector_neck", device);
    bundle->trackerNeck_ = loadModule(path, name, parts.trackerNeck, "tracker_neck", device);
  } else if (compiled) {
    throw CoreError(ErrorCode::kModelLoad,
                    "bundle '" + name + "' has one vision encoder (format " +
                        std::to_string(m.formatVersion) +
                        ") and no compiled modules: export it with tools/export_sam3.py --compile");
  } else {
    bundle->visionEncoder_ = loadModule(path, name, m.visionEncoder, "vision_encoder", device);
  }
  bundle->textEncoder_ = loadModule(path, name, m.textEncoder, "text_encoder", device);
  bundle->detector_ = loadModule(path, name, m.detector, "detector", device);
  bundle->pointDecoder_ = loadModule(path, name, m.pointDecoder, "point_decoder", device);
  bundle->pointDecoderMultimask_ =
      loadModule(path, name, m.pointDecoderMultimask, "point_decoder_multimask", device);
  if (m.tracker) {
    const TrackerSpec& t = *m.tracker;
    bundle->memoryAttention_ =
        loadModule(path, name, t.memoryAttention, "memory_attention", device);
    bundle->trackerDecoder_ = loadModule(path, name, t.decoder, "tracker_decoder", device);
    bundle->trackerDecoderMultimask_ =
        loadModule(path, name, t.decoderMultimask, "tracker_decoder_multimask", device);
    bundle->memoryEncoder_ = loadModule(path, name, t.memoryEncoder, "memory_encoder", device);
    if (!bundle->memoryAttention_.hasattr("no_memory_embedding") ||
        !bundle->memoryAttention_.attr("no_memory_embedding").isTensor()) {
      throw CoreError(ErrorCode::kModelLoad, "bundle '" + name + "': " + t.memoryAttention.file +
                                                 " has no no_memory_embedding tensor");
    }
    at::Tensor embedding = bundle->memoryAttention_.attr("no_memory_embedding").toTensor();
    if (embedding.numel() != t.hiddenSize) {
      throw CoreError(ErrorCode::kModelLoad, "bundle '" + name + "': no_memory_embedding has " +
                                                 std::to_string(embedding.numel()) +
                                                 " values, expected " +
                                                 std::to_string(t.hiddenSize));
    }
    bundle->noMemoryEmbedding_ =
        embedding.detach().to(device, at::kFloat).reshape({1, t.hiddenSize, 1, 1}).clone();
  }
  if (m.concept) {
    bundle->trackerMaskDecoder_ =
        loadModule(path, name, m.concept->maskDecoder, "tracker_mask_decoder", device);
  }
  return bundle;
}

const VisionParts& Bundle::visionParts() const {
  if (!manifest_.visionParts) {
    throw CoreError(ErrorCode::kInternal, "bundle '" + name_ +
                                              "' has one vision encoder, not its parts (format " +
                                              std::to_string(manifest_.formatVersion) + ")");
  }
  return *manifest_.visionParts;
}

const TrackerSpec& Bundle::trackerSpec() const {
  if (!manifest_.tracker) {
    throw CoreError(ErrorCode::kInternal, "bundle '" + name_ + "' has no tracker modules");
  }
  return *manifest_.tracker;
}

NamedTensors Bundle::call(ModuleKind kind, const NamedTensors& inputs, SymbolSizes symbols) {
  const ModuleSpec* spec = nullptr;
  torch::jit::Module* module = nullptr;
  switch (kind) {
    case ModuleKind::kVisionEncoder:
      if (manifest_.visionParts) {
        throw CoreError(ErrorCode::kInternal,
                        "bundle '" + name_ + "' splits its vision encoder (format 4)");
      }
      spec = &manifest_.visionEncoder;
      module = &visionEncoder_;
      break;
    case ModuleKind::kVisionTrunk:
      spec = &visionParts().trunk;
      module = &visionTrunk_;
      break;
    case ModuleKind::kDetectorNeck:
      spec = &visionParts().detectorNeck;
      module = &detectorNeck_;
      break;
    case ModuleKind::kTrackerNeck:
      spec = &visionParts().trackerNeck;
      module = &trackerNeck_;
      break;
    case ModuleKind::kTextEncoder:
      spec = &manifest_.textEncoder;
      module = &textEncoder_;
      break;
    case ModuleKind::kDetector:
      spec = &manifest_.detector;
      module = &detector_;
      break;
    case ModuleKind::kPointDecoder:
      spec = &manifest_.pointDecoder;
      module = &pointDecoder_;
      break;
    case ModuleKind::kPointDecoderMultimask:
      spec = &manifest_.pointDecoderMultimask;
      module = &pointDecoderMultimask_;
      break;
    case ModuleKind::kMemoryAttention:
      spec = &trackerSpec().memoryAttention;
      module = &memoryAttention_;
      break;
    case ModuleKind::kTrackerDecoder:
      spec = &trackerSpec().decoder;
      module = &trackerDecoder_;
      break;
    case ModuleKind::kTrackerDecoderMultimask:
      spec = &trackerSpec().decoderMultimask;
      module = &trackerDecoderMultimask_;
      break;
    case ModuleKind::kMemoryEncoder:
      spec = &trackerSpec().memoryEncoder;
      module = &memoryEncoder_;
      break;
    case ModuleKind::kTrackerMaskDecoder:
      if (!manifest_.concept) {
        throw CoreError(ErrorCode::kInternal,
                        "bundle '" + name_ + "' has no concept-tracking modules");
      }
      spec = &manifest_.concept->maskDecoder;
      module = &trackerMaskDecoder_;
      break;
  }
  const char* name = moduleName(kind);

  std::vector<c10::IValue> arguments;
  arguments.reserve(spec->inputs.size());
  for (const TensorSpec& input : spec->inputs) {
    auto found = inputs.find(input.name);
    if (found == inputs.end()) {
      throw CoreError(ErrorCode::kInternal,
                      std::string(name) + " input " + input.name + " was not provided");
    }
    at::Tensor tensor = found->second.to(device_, scalarTypeOf(input.dtype));
    checkShape(tensor, input, symbols, name, "input");
    arguments.emplace_back(std::move(tensor));
  }

  std::vector<at::Tensor> outputs;
  if (kind == ModuleKind::kVisionTrunk && compiledTrunk_) {
    std::vector<at::Tensor> tensors;
    tensors.reserve(arguments.size());
    // AOTInductor kernels assume the strides they were compiled for: contiguous inputs.
    for (const c10::IValue& argument : arguments) {
      tensors.push_back(argument.toTensor().contiguous());
    }
    outputs = compiledTrunk_->run(tensors);
  } else {
    appendOutputs(module->forward(std::move(arguments)), name, outputs);
  }
  if (outputs.size() != spec->outputs.size()) {
    throw CoreError(ErrorCode::kInternal,
                    std::string(name) + " returned " + std::to_string(outputs.size()) +
                        " outputs, the manifest lists " + std::to_string(spec->outputs.size()));
  }
  NamedTensors named;
  for (size_t i = 0; i < outputs.size(); ++i) {
    checkShape(outputs[i], spec->outputs[i], symbols, name, "output");
    named.emplace(spec->outputs[i].name, std::move(outputs[i]));
  }
  return named;
}

}  // namespace sam3
