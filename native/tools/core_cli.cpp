// sam3_core_cli: the native core without Node, for debugging and benchmarks.
//
//   sam3_core_cli info <bundle> [--device D]
//   sam3_core_cli segment <bundle> <rgb-file> <width> <height> <ids> <threshold> [--device D]
//       <rgb-file>: width * height * 3 bytes of raw RGB; <ids>: comma-separated token ids
//       (bos ... eos, padded here with the pad id) or a file holding them. Prints JSON.
//   sam3_core_cli bench <bundle> [--device D] [--size WxH] [--prompts N] [--iters K]
//                 [--batch B] [--compiled true]
//       Random image and prompts; prints the mean milliseconds per stage and the images per
//       second. --batch B: each iteration submits B images at once to an engine that batches
//       up to B of them per vision encoder call (ImageBatching, as IMAGE_MODEL_BATCH_SIZE), then
//       detects the prompts on each; the stage times are then those of the last call.
//       --compiled true: the bundle's compiled vision trunk (export_sam3.py --compile).
//   sam3_core_cli track <bundle> <rgb-file> <width> <height> [--device D] [--objects K]
//                 [--tokens ID,ID,... [--max-objects N] [--hotstart-delay D]]
//                 [--official-postprocess true|false]
//       <rgb-file>: raw RGB frames back to back. One click per object on frame 0 (spread as
//       bench/video.ts spreads them), then every later frame forward; prints frames per second
//       and the mean milliseconds per stage of the propagated frames.
//   sam3_core_cli resize <rgb-file> <width> <height> <size> <out-file>
//       Writes the uint8 CHW antialiased resize the vision encoder's input starts from.
//   sam3_core_cli preprocess <rgb-file> <width> <height> <size> <out-file> [--mean a,b,c]
//                            [--std a,b,c]
//       Writes pixel_values as float32 CHW (mean and std default to 0.5 each).
//   sam3_core_cli postprocess < request.json
//       The official mask post-processing (native/core/mask_postprocess.h) on one JSON request
//       read from stdin, or on a JSON array of requests (answered by an array, in order). Mask
//       data are flat or nested arrays of numbers (bools allowed) in row-major order; each
//       request has an "op":
//         {"op": "components", "shape": [..., H, W], "mask": [...]}
//             -> {"areas": [...]}: 8-connected component sizes (0 on background) per H x W mask
//         {"op": "fill_holes", "shape": [..., H, W], "logits": [...], "max_area": K,
//          "fill_holes": true, "remove_sprinkles": true}   (both flags optional, default true)
//             -> {"logits": [...]}: fill_holes_in_mask_scores per H x W mask
//         {"op": "mask_iou", "shape": [H, W], "a": [n * H * W], "b": [m * H * W]}
//             -> {"shape": [n, m], "iou": [n * m]}: IoU of the binarized (> 0) masks
//         {"op": "nms", "shape": [H, W], "probs": [n], "masks": [n * H * W],
//          "prob_threshold": p, "iou_threshold": t}
//             -> {"keep": [n bools]}
//       Inputs are read as float32; output floats are printed exactly (%.17g of the float).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine.h"
#include "errors.h"
#include "image_pipeline.h"
#include "json.h"
#include "mask_postprocess.h"
#include "runtime_info.h"

namespace {

using sam3::CoreError;
using sam3::ErrorCode;

// What the server computes for text prompts: the detector's maps only (with a format-4 bundle
// the tracker's neck does not run).
constexpr sam3::ImageMaps kTextPromptMaps{true, false, false};

// Starts `count` calls at once (start(i, done)) and waits for all of them; returns their
// values in order, or throws the first error once every call has delivered (the callbacks
// hold the promises until then).
template <typename T, typename Start>
std::vector<T> waitForAll(size_t count, Start start) {
  std::vector<std::promise<sam3::Outcome<T>>> promises(count);
  for (size_t i = 0; i < count; ++i) {
    start(i, [&promise = promises[i]](sam3::Outcome<T> outcome) {
      promise.set_value(std::move(outcome));
    });
  }
  std::vector<sam3::Outcome<T>> outcomes;
  for (auto& promise : promises) outcomes.push_back(promise.get_future().get());
  std::vector<T> values;
  for (sam3::Outcome<T>& outcome : outcomes) {
    if (!outcome.ok()) throw *outcome.error;
    values.push_back(std::move(outcome.value));
  }
  return values;
}

// Blocks until a core completion callback delivers, returning its value or throwing its error.
template <typename T, typename Start>
T waitFor(Start start) {
  return std::move(waitForAll<T>(1, [&](size_t, auto done) { start(std::move(done)); }).front());
}

std::shared_ptr<sam3::Engine> loadEngine(const std::string& bundle, const std::string& device,
                                         sam3::ImageBatching batching = {}, bool compiled = false) {
  return waitFor<std::shared_ptr<sam3::Engine>>(
      [&](sam3::Done<std::shared_ptr<sam3::Engine>> done) {
        sam3::Engine::load(bundle, device, done, batching, compiled);
      });
}

void closeEngine(const std::shared_ptr<sam3::Engine>& engine) {
  std::promise<void> drained;
  engine->close([&drained] { drained.set_value(); });
  drained.get_future().wait();
}

std::vector<uint8_t> readBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CoreError(ErrorCode::kBadInput, "cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

int64_t parseInt(const std::string& text, const char* what) {
  try {
    size_t used = 0;
    long long value = std::stoll(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  throw CoreError(ErrorCode::kBadInput, std::string(what) + " must be an integer: " + text);
}

// Token ids from "1,2,3" or from a file holding ids separated by commas or whitespace.
std::vector<int32_t> parseIds(const std::string& argument) {
  std::string text = argument;
  std::ifstream file(argument);
  if (file) text.assign(std::istreambuf_iterator<char>(file), {});
  for (char& c : text) {
    if (c == ',' || c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  std::istringstream in(text);
  std::vector<int32_t> ids;
  std::string token;
  while (in >> token) ids.push_back(static_cast<int32_t>(parseInt(token, "token id")));
  if (ids.empty()) throw CoreError(ErrorCode::kBadInput, "no token ids given");
  return ids;
}

std::string jsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string stagesJson(const sam3::StageTimes& times) {
  std::ostringstream out;
  out << "{";
  bool first = true;
  for (const auto& [stage, ms] : times) {
    out << (first ? "" : ", ") << jsonString(stage) << ": " << ms;
    first = false;
  }
  out << "}";
  return out.str();
}

struct Options {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
};

Options parseOptions(int argc, char** argv, int from) {
  Options options;
  for (int i = from; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0) {
      if (i + 1 >= argc) throw CoreError(ErrorCode::kBadInput, arg + " needs a value");
      options.flags[arg.substr(2)] = argv[++i];
    } else {
      options.positional.push_back(arg);
    }
  }
  return options;
}

std::string flag(const Options& options, const std::string& name, const std::string& fallback) {
  auto found = options.flags.find(name);
  return found == options.flags.end() ? fallback : found->second;
}

// Pads ids to the context length (truncating keeps the last id, the end token).
void appendPrompt(const sam3::BundleInfo& info, std::vector<int32_t> ids,
                  std::vector<int32_t>& allIds, std::vector<int32_t>& allMask) {
  size_t L = static_cast<size_t>(info.contextLength);
  if (ids.size() > L) {
    int32_t last = ids.back();
    ids.resize(L);
    ids.back() = last;
  }
  for (size_t i = 0; i < L; ++i) {
    allIds.push_back(i < ids.size() ? ids[i] : static_cast<int32_t>(info.padId));
    allMask.push_back(i < ids.size() ? 1 : 0);
  }
}

int info(const Options& options) {
  if (options.positional.size() != 1) throw CoreError(ErrorCode::kBadInput, "usage: info <bundle>");
  auto engine = loadEngine(options.positional[0], flag(options, "device", "cpu"));
  const sam3::BundleInfo& info = engine->info();
  sam3::RuntimeInfo runtime = sam3::runtimeInfo();
  std::cout << "{\n"
            << "  \"modelId\": " << jsonString(info.modelId) << ",\n"
            << "  \"randomWeights\": " << (info.randomWeights ? "true" : "false") << ",\n"
            << "  \"checksum\": " << jsonString(info.checksum) << ",\n"
            << "  \"dtype\": " << jsonString(info.dtype) << ",\n"
            << "  \"resolution\": " << info.resolution << ",\n"
            << "  \"maskSize\": " << info.maskSize << ",\n"
            << "  \"numQueries\": " << info.numQueries << ",\n"
            << "  \"contextLength\": " << info.contextLength << ",\n"
            << "  \"device\": " << jsonString(engine->device()) << ",\n"
            << "  \"linkedTorch\": " << jsonString(runtime.torchVersion) << ",\n"
            << "  \"cudaDeviceCount\": " << runtime.cudaDeviceCount << "\n"
            << "}\n";
  closeEngine(engine);
  return 0;
}

int segment(const Options& options) {
  if (options.positional.size() != 6) {
    throw CoreError(ErrorCode::kBadInput,
                    "usage: segment <bundle> <rgb-file> <width> <height> <ids> <threshold>");
  }
  auto engine = loadEngine(options.positional[0], flag(options, "device", "cpu"));
  std::vector<uint8_t> rgb = readBytes(options.positional[1]);
  sam3::ImageRequest image;
  image.rgb = rgb.data();
  image.byteLength = rgb.size();
  image.width = parseInt(options.positional[2], "width");
  image.height = parseInt(options.positional[3], "height");
  std::vector<int32_t> ids, mask;
  appendPrompt(engine->info(), parseIds(options.positional[4]), ids, mask);
  double threshold = std::stod(options.positional[5]);

  auto embedding = waitFor<std::shared_ptr<sam3::ImageEmbedding>>(
      [&](auto done) { engine->encodeImage(image, done, nullptr, kTextPromptMaps); });
  sam3::TextRequest text{ids.data(), ids.size(), mask.data(), mask.size(), 1};
  auto prompts = waitFor<std::vector<std::shared_ptr<sam3::TextEmbedding>>>(
      [&](auto done) { engine->encodeText(text, done); });
  std::vector<sam3::ConceptQuery> queries(1);
  queries[0].text = prompts[0];
  auto results = waitFor<std::vector<sam3::ConceptInstances>>(
      [&](auto done) { engine->detect(embedding, queries, threshold, done); });

  const sam3::ConceptInstances& found = results[0];
  std::cout << "{\"width\": " << image.width << ", \"height\": " << image.height
            << ", \"instances\": [";
  for (size_t i = 0; i < found.scores.size(); ++i) {
    std::cout << (i ? ",\n  " : "\n  ") << "{\"score\": " << found.scores[i] << ", \"box\": ["
              << found.boxes[4 * i] << ", " << found.boxes[4 * i + 1] << ", "
              << found.boxes[4 * i + 2] << ", " << found.boxes[4 * i + 3]
              << "], \"rle\": " << jsonString(found.masks[i]) << "}";
  }
  std::cout << "],\n \"stages\": " << stagesJson(engine->lastStageTimes()) << "}\n";
  closeEngine(engine);
  return 0;
}

int bench(const Options& options) {
  if (options.positional.size() != 1)
    throw CoreError(ErrorCode::kBadInput, "usage: bench <bundle>");
  std::string size = flag(options, "size", "640x480");
  size_t x = size.find('x');
  if (x == std::string::npos) throw CoreError(ErrorCode::kBadInput, "--size is WxH");
  int64_t width = parseInt(size.substr(0, x), "width");
  int64_t height = parseInt(size.substr(x + 1), "height");
  int64_t prompts = parseInt(flag(options, "prompts", "4"), "--prompts");
  int64_t iterations = parseInt(flag(options, "iters", "3"), "--iters");
  double threshold = std::stod(flag(options, "threshold", "0.0"));
  const int64_t batch = parseInt(flag(options, "batch", "1"), "--batch");
  // A long window: the batch is full as soon as this iteration's images are submitted.
  const sam3::ImageBatching batching{batch, batch > 1 ? 1000 : 0};
  const std::string compiled = flag(options, "compiled", "false");
  if (compiled != "true" && compiled != "false") {
    throw CoreError(ErrorCode::kBadInput, "--compiled is true or false");
  }

  auto loadStart = std::chrono::steady_clock::now();
  auto engine = loadEngine(options.positional[0], flag(options, "device", "cpu"), batching,
                           compiled == "true");
  double loadMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - loadStart)
          .count();
  const sam3::BundleInfo& info = engine->info();
  std::mt19937 random(0);
  std::vector<uint8_t> rgb(static_cast<size_t>(width * height * 3));
  for (uint8_t& byte : rgb) byte = static_cast<uint8_t>(random() & 0xff);
  std::vector<int32_t> ids, mask;
  for (int64_t p = 0; p < prompts; ++p) {
    std::vector<int32_t> prompt = {static_cast<int32_t>(info.bosId),
                                   static_cast<int32_t>(320 + p % 1000),
                                   static_cast<int32_t>(info.eosId)};
    appendPrompt(info, prompt, ids, mask);
  }

  std::map<std::string, double> totals;
  double firstMs = 0;
  size_t instances = 0;
  for (int64_t iteration = 0; iteration <= iterations; ++iteration) {
    auto start = std::chrono::steady_clock::now();
    sam3::ImageRequest image{rgb.data(), rgb.size(), width, height};
    auto embeddings = waitForAll<std::shared_ptr<sam3::ImageEmbedding>>(
        static_cast<size_t>(batch),
        [&](size_t, auto done) { engine->encodeImage(image, done, nullptr, kTextPromptMaps); });
    sam3::TextRequest text{ids.data(), ids.size(), mask.data(), mask.size(), prompts};
    auto texts = waitFor<std::vector<std::shared_ptr<sam3::TextEmbedding>>>(
        [&](auto done) { engine->encodeText(text, done); });
    std::vector<sam3::ConceptQuery> queries(texts.size());
    for (size_t q = 0; q < texts.size(); ++q) queries[q].text = texts[q];
    auto results = waitForAll<std::vector<sam3::ConceptInstances>>(
        embeddings.size(),
        [&](size_t i, auto done) { engine->detect(embeddings[i], queries, threshold, done); });
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    instances = 0;
    for (const auto& result : results.back()) instances += result.scores.size();
    if (iteration == 0) {
      firstMs = ms;  // warm-up: first calls of a TorchScript module include graph setup
      continue;
    }
    for (const auto& [stage, stageMs] : engine->lastStageTimes()) totals[stage] += stageMs;
    totals["total"] += ms;
  }
  std::cout << "bundle " << info.modelId << " (R=" << info.resolution << "), device "
            << engine->device() << ", image " << width << "x" << height << ", " << prompts
            << " prompts, " << instances << " instances kept\n";
  const double images = static_cast<double>(batch * iterations);
  std::printf("  %-16s %10.2f images/s (batch %lld)\n", "throughput",
              images * 1000.0 / totals["total"], static_cast<long long>(batch));
  std::printf("  %-16s %10.2f ms\n", "load", loadMs);
  std::printf("  %-16s %10.2f ms\n", "first call", firstMs);
  for (const auto& [stage, total] : totals) {
    std::printf("  %-16s %10.2f ms (mean of %lld)\n", stage.c_str(),
                total / static_cast<double>(iterations), static_cast<long long>(iterations));
  }
  closeEngine(engine);
  return 0;
}

int track(const Options& options) {
  if (options.positional.size() != 4) {
    throw CoreError(ErrorCode::kBadInput, "usage: track <bundle> <rgb-file> <width> <height>");
  }
  int64_t width = parseInt(options.positional[2], "width");
  int64_t height = parseInt(options.positional[3], "height");
  int64_t objects = parseInt(flag(options, "objects", "1"), "--objects");
  // --tokens: a text concept instead of clicks (its CLIP token ids, comma-separated, without
  // padding), tracked with --hotstart-delay and at most --max-objects objects.
  const std::string tokens = flag(options, "tokens", "");
  const int64_t maxObjects = parseInt(flag(options, "max-objects", "0"), "--max-objects");
  const int64_t hotstartDelay = parseInt(flag(options, "hotstart-delay", "0"), "--hotstart-delay");
  const std::string official = flag(options, "official-postprocess", "true");
  if (official != "true" && official != "false") {
    throw CoreError(ErrorCode::kBadInput, "--official-postprocess is true or false");
  }
  std::ifstream file(options.positional[1], std::ios::binary);
  std::vector<uint8_t> video((std::istreambuf_iterator<char>(file)),
                             std::istreambuf_iterator<char>());
  const size_t frameBytes = static_cast<size_t>(width * height * 3);
  if (video.empty() || video.size() % frameBytes != 0) {
    throw CoreError(ErrorCode::kBadInput, "the rgb file must hold whole width x height frames");
  }
  const int64_t frames = static_cast<int64_t>(video.size() / frameBytes);
  auto engine = loadEngine(options.positional[0], flag(options, "device", "cpu"));
  sam3::TrackerOptions trackerOptions;
  trackerOptions.numFrames = frames;
  trackerOptions.width = width;
  trackerOptions.height = height;
  trackerOptions.maxObjects = maxObjects;
  trackerOptions.officialPostprocess = official == "true";
  auto session = engine->createTracker(trackerOptions);
  auto frameAt = [&](int64_t index) {
    return sam3::FrameRequest{video.data() + static_cast<size_t>(index) * frameBytes, frameBytes};
  };
  if (!tokens.empty()) {
    sam3::ConceptText text;
    text.text = "cli";
    std::stringstream list(tokens);
    for (std::string item; std::getline(list, item, ',');) {
      text.tokenIds.push_back(static_cast<int32_t>(parseInt(item, "--tokens")));
    }
    const int64_t L = engine->info().contextLength;
    if (static_cast<int64_t>(text.tokenIds.size()) > L) {
      throw CoreError(ErrorCode::kBadInput, "--tokens: at most the context length of ids");
    }
    text.attentionMask.assign(text.tokenIds.size(), 1);
    text.tokenIds.resize(static_cast<size_t>(L), text.tokenIds.back());
    text.attentionMask.resize(static_cast<size_t>(L), 0);
    sam3::ConceptPrompt prompt;
    prompt.texts = {text};
    auto result = waitFor<sam3::ConceptResult>(
        [&](auto done) { engine->trackerAddConcept(session, frameAt(0), prompt, done); });
    std::cout << "concept on frame 0: " << result.frame.objects.size() << " objects\n";
    objects = 0;
  }
  for (int64_t k = 0; k < objects; ++k) {
    sam3::TrackerPrompt prompt;
    prompt.objId = k + 1;
    prompt.points = {0.15 + 0.7 * static_cast<double>(k % 4) / 3.0,
                     0.25 + 0.5 * static_cast<double>(k / 4)};
    prompt.pointLabels = {1};
    waitFor<sam3::TrackerFrame>(
        [&](auto done) { engine->trackerAddPrompt(session, frameAt(0), prompt, done); });
  }
  const sam3::StageTimes before = engine->stageTotals();
  size_t present = 0;
  auto start = std::chrono::steady_clock::now();
  for (int64_t index = 1; index < frames; ++index) {
    sam3::StepRequest request;
    request.frameIndex = index;
    request.hotstartDelay = hotstartDelay;
    request.runStart = index == 1;
    request.runEnd = index == frames - 1;
    auto result = waitFor<std::vector<sam3::TrackerFrame>>(
        [&](auto done) { engine->trackerStep(session, frameAt(index), request, done); });
    for (const auto& frame : result) {
      for (const auto& object : frame.objects) present += object.present ? 1 : 0;
    }
  }
  sam3::StageTimes totals = engine->stageTotals();
  for (const auto& [stage, ms] : before) totals[stage] -= ms;
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t steps = std::max<int64_t>(1, frames - 1);
  std::cout << "bundle " << engine->info().modelId << ", device " << engine->device() << ", "
            << width << "x" << height << ", " << objects << " objects, " << steps
            << " frames propagated, " << present << " object-frames present\n";
  std::printf("  %-16s %10.2f fps\n", "propagation", static_cast<double>(steps) / seconds);
  for (const auto& [stage, total] : totals) {
    std::printf("  %-16s %10.2f ms per frame\n", stage.c_str(), total / static_cast<double>(steps));
  }
  session->release();
  closeEngine(engine);
  return 0;
}

// The arguments of resize and preprocess: <rgb-file> <width> <height> <size> <out-file>.
struct ImageJob {
  std::vector<uint8_t> rgb;
  int64_t width = 0;
  int64_t height = 0;
  int64_t size = 0;
  std::string out;
};

ImageJob imageJob(const Options& options, const char* command) {
  if (options.positional.size() != 5) {
    throw CoreError(ErrorCode::kBadInput, std::string("usage: ") + command +
                                              " <rgb-file> <width> <height> <size> <out-file>");
  }
  ImageJob job;
  job.rgb = readBytes(options.positional[0]);
  job.width = parseInt(options.positional[1], "width");
  job.height = parseInt(options.positional[2], "height");
  job.size = parseInt(options.positional[3], "size");
  job.out = options.positional[4];
  if (job.width <= 0 || job.height <= 0 || job.size <= 0 ||
      job.rgb.size() != static_cast<size_t>(job.width * job.height * 3)) {
    throw CoreError(ErrorCode::kBadInput, "rgb file must hold width * height * 3 bytes");
  }
  return job;
}

template <typename T>
void writeValues(const std::string& path, const std::vector<T>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size() * sizeof(T)));
  if (!out) throw CoreError(ErrorCode::kBadInput, "cannot write " + path);
}

int resize(const Options& options) {
  ImageJob job = imageJob(options, "resize");
  writeValues(job.out, sam3::resizeRgbToSquareU8(job.rgb.data(), job.width, job.height, job.size));
  return 0;
}

std::array<float, 3> parseTriple(const std::string& text, const char* what) {
  std::array<float, 3> values{};
  std::string normalized = text;
  for (char& c : normalized) {
    if (c == ',') c = ' ';
  }
  std::istringstream in(normalized);
  for (float& value : values) {
    if (!(in >> value)) throw CoreError(ErrorCode::kBadInput, std::string(what) + " is a,b,c");
  }
  return values;
}

int preprocess(const Options& options) {
  ImageJob job = imageJob(options, "preprocess");
  sam3::ImageNormalization normalization{
      parseTriple(flag(options, "mean", "0.5,0.5,0.5"), "--mean"),
      parseTriple(flag(options, "std", "0.5,0.5,0.5"), "--std")};
  writeValues(job.out, sam3::preprocessImageOnCpu(job.rgb.data(), job.width, job.height, job.size,
                                                  normalization));
  return 0;
}

// --- postprocess: JSON in, JSON out (see the usage above).

const sam3::json::Value& member(const sam3::json::Value& request, const std::string& key) {
  const sam3::json::Value* value = request.find(key);
  if (value == nullptr)
    throw CoreError(ErrorCode::kBadInput, "postprocess: missing \"" + key + "\"");
  return *value;
}

double numberMember(const sam3::json::Value& request, const std::string& key) {
  const sam3::json::Value& value = member(request, key);
  if (!value.isNumber()) {
    throw CoreError(ErrorCode::kBadInput, "postprocess: \"" + key + "\" must be a number");
  }
  return value.asNumber();
}

bool flagMember(const sam3::json::Value& request, const std::string& key, bool fallback) {
  const sam3::json::Value* value = request.find(key);
  if (value == nullptr) return fallback;
  if (!value->isBool()) {
    throw CoreError(ErrorCode::kBadInput, "postprocess: \"" + key + "\" must be a bool");
  }
  return value->asBool();
}

// Numbers (and bools, as 0 and 1) of a flat or nested array, in order, as float32.
void flattenInto(const sam3::json::Value& value, const std::string& key, std::vector<float>& out) {
  if (value.isNumber()) {
    out.push_back(static_cast<float>(value.asNumber()));
  } else if (value.isBool()) {
    out.push_back(value.asBool() ? 1.0f : 0.0f);
  } else if (value.isArray()) {
    for (const sam3::json::Value& item : value.items()) flattenInto(item, key, out);
  } else {
    throw CoreError(ErrorCode::kBadInput, "postprocess: \"" + key + "\" holds a non-number");
  }
}

std::vector<float> floatsMember(const sam3::json::Value& request, const std::string& key,
                                int64_t expected) {
  std::vector<float> values;
  flattenInto(member(request, key), key, values);
  if (expected >= 0 && static_cast<int64_t>(values.size()) != expected) {
    throw CoreError(ErrorCode::kBadInput, "postprocess: \"" + key + "\" holds " +
                                              std::to_string(values.size()) + " values, expected " +
                                              std::to_string(expected));
  }
  return values;
}

// "shape": [..., H, W] (exactly [H, W] when `plain`); returns {batch, H, W}.
std::array<int64_t, 3> shapeMember(const sam3::json::Value& request, bool plain) {
  const sam3::json::Value& shape = member(request, "shape");
  const size_t dims = shape.isArray() ? shape.items().size() : 0;
  if (dims < 2 || (plain && dims != 2)) {
    throw CoreError(ErrorCode::kBadInput, plain ? "postprocess: \"shape\" is [H, W]"
                                                : "postprocess: \"shape\" is [..., H, W]");
  }
  std::array<int64_t, 3> out = {1, 0, 0};
  for (size_t d = 0; d < dims; ++d) {
    const sam3::json::Value& item = shape.items()[d];
    const double size = item.isNumber() ? item.asNumber() : -1;
    if (!(size >= 0 && size <= 1e9) || size != static_cast<double>(static_cast<int64_t>(size))) {
      throw CoreError(ErrorCode::kBadInput, "postprocess: \"shape\" holds sizes >= 0");
    }
    const int64_t value = static_cast<int64_t>(size);
    if (d + 2 < dims) out[0] *= value;
    if (d + 2 == dims) out[1] = value;
    if (d + 1 == dims) out[2] = value;
  }
  return out;
}

template <typename T>
void appendJsonArray(std::ostringstream& out, const T* values, size_t count) {
  out << "[";
  char text[40];
  for (size_t i = 0; i < count; ++i) {
    if (i) out << ", ";
    if constexpr (std::is_same_v<T, float>) {
      std::snprintf(text, sizeof(text), "%.17g", static_cast<double>(values[i]));
      out << text;
    } else {
      out << values[i];
    }
  }
  out << "]";
}

std::string postprocessAnswer(const sam3::json::Value& request) {
  if (!request.isObject())
    throw CoreError(ErrorCode::kBadInput, "postprocess: a request is an object");
  const sam3::json::Value& opValue = member(request, "op");
  const std::string op = opValue.isString() ? opValue.asString() : "";
  std::ostringstream out;
  if (op == "components" || op == "fill_holes") {
    const auto [batch, height, width] = shapeMember(request, false);
    const int64_t pixels = height * width;
    if (op == "components") {
      std::vector<float> values = floatsMember(request, "mask", batch * pixels);
      std::vector<uint8_t> mask(values.size());
      for (size_t i = 0; i < values.size(); ++i) mask[i] = values[i] != 0.0f;
      std::vector<int32_t> areas(values.size());
      for (int64_t b = 0; b < batch; ++b) {
        sam3::componentAreas(mask.data() + b * pixels, height, width, areas.data() + b * pixels);
      }
      out << "{\"areas\": ";
      appendJsonArray(out, areas.data(), areas.size());
    } else {
      std::vector<float> logits = floatsMember(request, "logits", batch * pixels);
      const double maxArea = numberMember(request, "max_area");
      if (!(std::abs(maxArea) <= 1e15) ||
          maxArea != static_cast<double>(static_cast<int64_t>(maxArea))) {
        throw CoreError(ErrorCode::kBadInput, "postprocess: \"max_area\" must be an integer");
      }
      const bool fillHoles = flagMember(request, "fill_holes", true);
      const bool removeSprinkles = flagMember(request, "remove_sprinkles", true);
      for (int64_t b = 0; b < batch; ++b) {
        sam3::fillHolesInMaskScores(logits.data() + b * pixels, height, width,
                                    static_cast<int64_t>(maxArea), fillHoles, removeSprinkles);
      }
      out << "{\"logits\": ";
      appendJsonArray(out, logits.data(), logits.size());
    }
  } else if (op == "mask_iou" || op == "nms") {
    const auto [batch, height, width] = shapeMember(request, true);
    (void)batch;
    const int64_t pixels = height * width;
    auto masksMember = [&](const std::string& key, int64_t expectedCount) {
      std::vector<float> values = floatsMember(request, key, -1);
      const int64_t count = pixels > 0 ? static_cast<int64_t>(values.size()) / pixels : 0;
      if (count * pixels != static_cast<int64_t>(values.size()) ||
          (expectedCount >= 0 && count != expectedCount)) {
        throw CoreError(ErrorCode::kBadInput, "postprocess: \"" + key +
                                                  "\" must hold whole H x W masks" +
                                                  (expectedCount >= 0 ? ", one per prob" : ""));
      }
      return std::make_pair(values, count);
    };
    if (op == "mask_iou") {
      const auto [a, n] = masksMember("a", -1);
      const auto [b, m] = masksMember("b", -1);
      std::vector<float> ious = sam3::maskIou(a.data(), n, b.data(), m, pixels);
      out << "{\"shape\": [" << n << ", " << m << "], \"iou\": ";
      appendJsonArray(out, ious.data(), ious.size());
    } else {
      std::vector<float> probs = floatsMember(request, "probs", -1);
      const auto [masks, n] = masksMember("masks", static_cast<int64_t>(probs.size()));
      (void)n;
      std::vector<bool> keep =
          sam3::nmsMasks(probs, masks.data(), pixels, numberMember(request, "prob_threshold"),
                         numberMember(request, "iou_threshold"));
      out << "{\"keep\": [";
      for (size_t i = 0; i < keep.size(); ++i)
        out << (i ? ", " : "") << (keep[i] ? "true" : "false");
      out << "]";
    }
  } else {
    throw CoreError(ErrorCode::kBadInput,
                    "postprocess: \"op\" is components, fill_holes, mask_iou or nms");
  }
  out << "}";
  return out.str();
}

int postprocess(const Options& options) {
  if (!options.positional.empty() || !options.flags.empty()) {
    throw CoreError(ErrorCode::kBadInput, "usage: postprocess < request.json");
  }
  const std::string text((std::istreambuf_iterator<char>(std::cin)), {});
  const sam3::json::Value request = sam3::json::parse(text);
  if (request.isArray()) {
    std::cout << "[";
    for (size_t i = 0; i < request.items().size(); ++i) {
      std::cout << (i ? ",\n" : "\n") << postprocessAnswer(request.items()[i]);
    }
    std::cout << "\n]\n";
  } else {
    std::cout << postprocessAnswer(request) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: sam3_core_cli info|segment|bench|track|resize|preprocess|postprocess "
                 "... (see native/tools/core_cli.cpp)\n";
    return 2;
  }
  std::string command = argv[1];
  try {
    Options options = parseOptions(argc, argv, 2);
    if (command == "info") return info(options);
    if (command == "segment") return segment(options);
    if (command == "bench") return bench(options);
    if (command == "track") return track(options);
    if (command == "resize") return resize(options);
    if (command == "preprocess") return preprocess(options);
    if (command == "postprocess") return postprocess(options);
    std::cerr << "unknown command " << command << "\n";
    return 2;
  } catch (const CoreError& e) {
    std::cerr << "error: " << sam3::errorCodeName(e.code()) << ": " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}
