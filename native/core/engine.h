// The native engine: a loaded bundle on one device, its executor thread, and the image
// pipeline (encodeImage -> encodeText -> detect). Light header: the binding and the CLI
// include it without LibTorch.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errors.h"
#include "tracker.h"

namespace sam3 {

// The manifest facts the JS side sees (BundleInfo in src/native/types.ts).
struct BundleInfo {
  std::string modelId;
  bool randomWeights = false;
  std::optional<int64_t> seed;
  std::string checksum;
  int64_t formatVersion = 0;
  std::string dtype;
  int64_t resolution = 0;
  int64_t patchSize = 0;
  int64_t featureSize = 0;
  int64_t maskSize = 0;
  int64_t hiddenSize = 0;
  int64_t numQueries = 0;
  int64_t contextLength = 0;
  int64_t vocabSize = 0;
  int64_t bosId = 0;
  int64_t eosId = 0;
  int64_t padId = 0;
  std::string vocabFile;  // file name inside the bundle directory
  std::string torchVersion;
  std::string transformersVersion;
  // The bundle carries the video tracker modules (format 2): createTracker works.
  bool videoAvailable = false;
  // The bundle carries concept tracking (format 3): text prompts in video work.
  bool conceptAvailable = false;
  // The engine runs the bundle's compiled vision trunk (Engine::load's `compiled`).
  bool compiled = false;
  // The vision encoder is split into trunk and necks (format 4): ImageMaps choose what runs.
  bool visionParts = false;
};

// Either a value or the error that replaced it.
template <typename T>
struct Outcome {
  T value{};
  std::optional<CoreError> error;
  bool ok() const { return !error.has_value(); }
};

// Completion callbacks run on the engine's executor thread, or on the caller's thread when
// the call is refused before queuing (ENGINE_CLOSED, or a bad device for load).
template <typename T>
using Done = std::function<void(Outcome<T>)>;

// Set by the caller (any thread) when it no longer wants a call's result: a call still queued
// behind other work then fails with CANCELLED instead of running. A running call finishes.
struct CancelFlag {
  std::atomic<bool> cancelled{false};
  void cancel() { cancelled.store(true); }
  bool isCancelled() const { return cancelled.load(); }
};
using CancelToken = std::shared_ptr<const CancelFlag>;

// Which maps of an image an embedding holds: the detector's (text and box prompts), the
// tracker's (clicks), and the trunk's vision_features, from which either neck can be computed
// later without the pixels (deriveImage). A bundle with one vision encoder (formats 1 to 3)
// always computes both necks' maps and has no trunk output to keep.
struct ImageMaps {
  bool detector = true;
  bool tracker = true;
  bool trunk = false;
};

// Features of one image, computed once by encodeImage (device memory, freed with the object).
class ImageEmbedding {
 public:
  struct Tensors;  // LibTorch tensors, defined in embedding_tensors.h
  ImageEmbedding(uint64_t bundleId, int64_t width, int64_t height,
                 std::unique_ptr<Tensors> tensors);
  ~ImageEmbedding();

  // Original image size in pixels: the size masks are returned at.
  int64_t width() const { return width_; }
  int64_t height() const { return height_; }
  // Exact bytes of the held tensors.
  int64_t byteSize() const { return byteSize_; }
  // The maps it holds.
  const ImageMaps& maps() const { return maps_; }
  uint64_t bundleId() const { return bundleId_; }
  const Tensors& tensors() const { return *tensors_; }

 private:
  uint64_t bundleId_;
  int64_t width_;
  int64_t height_;
  int64_t byteSize_;
  ImageMaps maps_;
  std::unique_ptr<Tensors> tensors_;
};

// Text features of one prompt (one row of the text encoder's batch).
class TextEmbedding {
 public:
  struct Tensors;
  TextEmbedding(uint64_t bundleId, std::unique_ptr<Tensors> tensors);
  ~TextEmbedding();

  int64_t byteSize() const { return byteSize_; }
  uint64_t bundleId() const { return bundleId_; }
  const Tensors& tensors() const { return *tensors_; }

 private:
  uint64_t bundleId_;
  int64_t byteSize_;
  std::unique_ptr<Tensors> tensors_;
};

// Caller-owned pixels: width * height * 3 bytes, row-major RGB. They must stay valid and
// unchanged until the completion callback has run.
struct ImageRequest {
  const uint8_t* rgb = nullptr;
  size_t byteLength = 0;
  int64_t width = 0;
  int64_t height = 0;
};

// Caller-owned token rows: batch * contextLength values each, row-major; same lifetime rule.
struct TextRequest {
  const int32_t* ids = nullptr;
  size_t idsLength = 0;
  const int32_t* mask = nullptr;  // 1 = token, 0 = padding
  size_t maskLength = 0;
  int64_t batch = 0;
};

// One concept prompt: text plus optional exemplar boxes.
struct ConceptQuery {
  std::shared_ptr<const TextEmbedding> text;
  std::vector<float> boxes;        // 4 per box: cx, cy, w, h normalized to [0, 1]
  std::vector<int32_t> boxLabels;  // one per box: 1 positive, 0 negative
};

// Instances of one query, highest score first.
struct ConceptInstances {
  std::vector<float> scores;       // sigmoid(logit) * sigmoid(presence logit)
  std::vector<float> boxes;        // 4 per instance: cx, cy, w, h normalized
  std::vector<std::string> masks;  // COCO RLE counts at the original image size
};

// One interactive (SAM-style) single-object query: clicks plus an optional box as a region
// hint. One click and no box is ambiguous: the multimask decoder predicts three masks and the
// one with the highest predicted IoU wins; anything else uses the single-mask decoder.
struct PointQuery {
  std::vector<float> points;         // 2 per click: x, y normalized to [0, 1]
  std::vector<int32_t> pointLabels;  // one per click: 1 positive, 0 negative
  std::vector<float> box;            // empty, or cx, cy, w, h normalized
};

// The object one PointQuery selects.
struct PointInstance {
  float score = 0;             // the decoder's predicted IoU of the chosen mask
  std::array<float, 4> box{};  // bounds of the binarized mask: cx, cy, w, h normalized
  std::string mask;            // COCO RLE counts at the original image size
};

// Milliseconds per stage of the most recent calls: preprocess, vision_encoder (encodeImage's
// vision pass, a tracker frame's), vision_neck (deriveImage's necks), text_encoder, detector,
// point_decoder, memory_attention, tracker_decoder, memory_encoder, postprocess
// (scores, sorting, boxes; on accelerators also the mask resize), rle (mask encoding and mask
// boxes; on CPU fused with each mask's resize).
using StageTimes = std::map<std::string, double>;

// The most queries one detector call takes; more are split into several calls.
constexpr size_t kMaxQueriesPerDetectorCall = 16;
// The most clicks one PointQuery takes (SAM refines with a handful; this bounds the prompt).
constexpr size_t kMaxClicksPerQuery = 64;
// Largest image side accepted (pixels): keeps width * height * 3 far from overflow and the
// per-mask buffers bounded.
constexpr int64_t kMaxImageSide = 16384;
// Bounds of ImageBatching.
constexpr int64_t kMaxImageBatch = 64;
constexpr int64_t kMaxImageBatchWaitMs = 1000;

// Cross-request batching of encodeImage: concurrent calls share vision encoder calls of up to
// maxSize images. A batch runs once maxSize images wait or the oldest has waited waitMs
// (the executor waits with it). maxSize 1: each image is its own call (no waiting).
struct ImageBatching {
  int64_t maxSize = 1;
  int64_t waitMs = 0;
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  // Checks `device` ("cpu", "cuda" or "cuda:N"), starts its executor thread and loads the
  // bundle there. Errors: BAD_INPUT (malformed device), DEVICE_UNAVAILABLE, MODEL_LOAD.
  // Returns the engine being loaded (to track it for teardown), or nullptr when the device
  // or the batching was refused (then `done` has already run). Batching needs a bundle whose
  // vision encoder takes a batch (exporter version 5); maxSize outside 1..kMaxImageBatch or
  // waitMs outside 0..kMaxImageBatchWaitMs is BAD_INPUT. `compiled`: run the bundle's
  // AOTInductor packages (tools/export_sam3.py --compile) in place of their TorchScript
  // modules; MODEL_LOAD when it has none, or they were built for another device type or a
  // CPU instruction set this machine lacks.
  static std::shared_ptr<Engine> load(const std::string& bundleDir, const std::string& device,
                                      Done<std::shared_ptr<Engine>> done,
                                      ImageBatching batching = {}, bool compiled = false);
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Valid once load completed successfully.
  const BundleInfo& info() const;
  // Normalized: "cpu" or "cuda:N".
  const std::string& device() const;

  // The image calls take an optional CancelToken: cancelled while queued, they fail with
  // CANCELLED without running. With batching, a bad image fails alone; a batch the device
  // has no memory for is encoded again one image at a time (a batch computes the necks any
  // of its images asks for, and each embedding keeps the maps its own call asked for).
  // BAD_INPUT when `maps` asks for nothing.
  void encodeImage(const ImageRequest& request, Done<std::shared_ptr<ImageEmbedding>> done,
                   CancelToken cancel = nullptr, ImageMaps maps = {});
  // An embedding of the same image holding `maps`: what `image` holds is shared, the rest
  // computed from its trunk output. BAD_INPUT when a map asked for is neither held nor
  // computable (no trunk output), or `maps` asks for nothing.
  void deriveImage(std::shared_ptr<const ImageEmbedding> image, ImageMaps maps,
                   Done<std::shared_ptr<ImageEmbedding>> done, CancelToken cancel = nullptr);
  // One embedding per row.
  void encodeText(const TextRequest& request,
                  Done<std::vector<std::shared_ptr<TextEmbedding>>> done,
                  CancelToken cancel = nullptr);
  // All queries through the detector in batches of kMaxQueriesPerDetectorCall, on the
  // embedding's detector maps (BAD_INPUT without them). Keeps instances with score >
  // threshold (compared in float32).
  void detect(std::shared_ptr<const ImageEmbedding> image, std::vector<ConceptQuery> queries,
              double threshold, Done<std::vector<ConceptInstances>> done,
              CancelToken cancel = nullptr);
  // Each query through a point decoder on the image's tracker maps (one call per query, in
  // order): exactly one instance per query. BAD_INPUT without tracker maps, and (naming the
  // query) for points not 2 per label, labels other than 0/1, non-finite numbers, a box not
  // empty or 4 numbers, no click and no box, more than kMaxClicksPerQuery clicks, or another
  // engine's embedding.
  void segmentPoints(std::shared_ptr<const ImageEmbedding> image, std::vector<PointQuery> queries,
                     Done<std::vector<PointInstance>> done, CancelToken cancel = nullptr);

  // A video tracking session on this engine (synchronous: it only allocates the session).
  // BAD_INPUT for numFrames outside 1..kMaxTrackerFrames, sides outside 1..16384,
  // memoryFrames < 1, or a bundle without tracker modules.
  std::shared_ptr<TrackerSession> createTracker(const TrackerOptions& options);
  // Each one executor task; a session's tasks run in submission order. A released session
  // fails with SESSION_CLOSED; bad arguments with BAD_INPUT naming the field (frameIndex
  // outside the video, labels other than 0/1, non-finite numbers, more than
  // kMaxTrackerClicks clicks, a box with clearOld false, neither click nor box).
  void trackerAddPrompt(std::shared_ptr<TrackerSession> session, const FrameRequest& frame,
                        TrackerPrompt prompt, Done<TrackerFrame> done);
  void trackerAddConcept(std::shared_ptr<TrackerSession> session, const FrameRequest& frame,
                         ConceptPrompt prompt, Done<ConceptResult> done);
  void trackerStep(std::shared_ptr<TrackerSession> session, const FrameRequest& frame,
                   StepRequest request, Done<std::vector<TrackerFrame>> done);
  void trackerRemoveObject(std::shared_ptr<TrackerSession> session, int64_t objId, Done<bool> done);
  void trackerRemoveConcept(std::shared_ptr<TrackerSession> session, int64_t conceptId,
                            Done<std::vector<int64_t>> done);
  void trackerReset(std::shared_ptr<TrackerSession> session, Done<int64_t> done);
  // Executor tasks completed so far (failed ones included, cancelled ones not; each image of
  // a batch counts as one): tests count frames computed.
  int64_t tasksRun() const;
  // Vision encoder calls of encodeImage so far, by the number of images in the call.
  std::map<int64_t, int64_t> imageBatchCounts() const;
  // Fault injection for the fault tests: the next `count` model tasks fail as if the device
  // had run out of memory (DEVICE_OOM), without running; the engine stays usable after.
  void injectDeviceOutOfMemory(int64_t count);

  StageTimes lastStageTimes() const;
  // Milliseconds per stage summed over every task so far (benchmarks take differences).
  StageTimes stageTotals() const;

  // Refuses new work, runs what is queued, frees the modules, then calls `drained` (on the
  // executor thread, or at once if that thread already ended).
  void close(std::function<void()> drained);
  // Process teardown: queued calls fail with ENGINE_CLOSED; waits for the running one.
  void cancelAndJoin();

  struct Impl;

 private:
  explicit Engine(const std::string& device);
  std::unique_ptr<Impl> impl_;
};

// Bytes held by all image and text embeddings of the process that are not yet freed.
int64_t liveEmbeddingBytes();

// Normalizes a device string to "cpu" or "cuda:N" and checks the device exists.
std::string normalizeDevice(const std::string& device);

}  // namespace sam3
