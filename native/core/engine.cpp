#include "engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>

#include "bundle.h"
#include "embedding_tensors.h"
#include "executor.h"
#include "host_memory.h"
#include "image_batch_queue.h"
#include "image_pipeline.h"
#include "postprocess.h"
#include "vision.h"

namespace sam3 {

namespace {

// Text rows per text encoder call.
constexpr int64_t kMaxTextBatch = 64;

std::atomic<int64_t> embeddingBytes{0};

[[noreturn]] void badInput(const std::string& message) {
  throw CoreError(ErrorCode::kBadInput, message);
}

// Index of the largest value, the first on ties; NaN counts as the largest (torch.argmax).
int64_t firstArgmax(const float* values, int64_t count) {
  int64_t best = 0;
  for (int64_t i = 1; i < count && !std::isnan(values[best]); ++i) {
    if (std::isnan(values[i]) || values[i] > values[best]) best = i;
  }
  return best;
}

void checkPointQuery(const PointQuery& query, size_t index) {
  const std::string where = "query " + std::to_string(index) + ": ";
  const size_t clicks = query.pointLabels.size();
  if (clicks > kMaxClicksPerQuery) {
    badInput(where + "at most " + std::to_string(kMaxClicksPerQuery) + " clicks are allowed (got " +
             std::to_string(clicks) + ")");
  }
  if (query.points.size() != 2 * clicks) {
    badInput(where + "points must hold 2 numbers (x, y) per point label (got " +
             std::to_string(query.points.size()) + " numbers for " + std::to_string(clicks) +
             " labels)");
  }
  for (float v : query.points) {
    if (!std::isfinite(v)) badInput(where + "point coordinates must be finite");
  }
  for (int32_t label : query.pointLabels) {
    if (label != 0 && label != 1) {
      badInput(where + "point labels must be 1 (positive) or 0 (negative)");
    }
  }
  if (!query.box.empty() && query.box.size() != 4) {
    badInput(where + "box must be empty or 4 numbers (cx, cy, w, h)");
  }
  for (float v : query.box) {
    if (!std::isfinite(v)) badInput(where + "box coordinates must be finite");
  }
  if (clicks == 0 && query.box.empty()) badInput(where + "give at least one click or a box");
}

}  // namespace

ImageEmbedding::ImageEmbedding(uint64_t bundleId, int64_t width, int64_t height,
                               std::unique_ptr<Tensors> tensors)
    : bundleId_(bundleId), width_(width), height_(height), tensors_(std::move(tensors)) {
  byteSize_ = 0;
  for (const at::Tensor* group : {tensors_->fpn, tensors_->trackerFpn}) {
    for (int i = 0; i < 3; ++i) {
      if (group[i].defined()) byteSize_ += tensorBytes(group[i]);
    }
  }
  if (tensors_->trunk.defined()) byteSize_ += tensorBytes(tensors_->trunk);
  maps_ = {tensors_->fpn[0].defined(), tensors_->trackerFpn[0].defined(),
           tensors_->trunk.defined()};
  embeddingBytes += byteSize_;
}

ImageEmbedding::~ImageEmbedding() { embeddingBytes -= byteSize_; }

TextEmbedding::TextEmbedding(uint64_t bundleId, std::unique_ptr<Tensors> tensors)
    : bundleId_(bundleId), tensors_(std::move(tensors)) {
  byteSize_ = tensorBytes(tensors_->features) + tensorBytes(tensors_->mask);
  embeddingBytes += byteSize_;
}

TextEmbedding::~TextEmbedding() { embeddingBytes -= byteSize_; }

int64_t liveEmbeddingBytes() { return embeddingBytes.load(); }

struct Engine::Impl {
  // Declared first so it is destroyed last: its destructor drains and joins.
  std::unique_ptr<Executor> executor;
  std::string device;
  std::shared_ptr<Bundle> bundle;  // executor thread only, after load
  BundleInfo info;                 // written once by load before `done`
  uint64_t bundleId = 0;           // likewise

  // encodeImage's waiting images when batching is on (null: each image is its own task).
  std::unique_ptr<ImageBatchQueue> imageBatches;

  mutable std::mutex timesMutex;
  StageTimes lastTimes;
  StageTimes totalTimes;
  std::map<int64_t, int64_t> batchCounts;  // vision encoder calls by images per call
  std::atomic<int64_t> tasksRun{0};
  std::atomic<int64_t> injectedOom{0};  // injectDeviceOutOfMemory

  // What every model task checks first: the engine is not being torn down, and no injected
  // fault is pending (executor thread only: no other task decrements between test and
  // decrement).
  void checkRunnable() {
    if (executor->cancelled()) throw CoreError(ErrorCode::kEngineClosed, "the engine is closed");
    if (injectedOom.load() > 0) {
      --injectedOom;
      throw CoreError(ErrorCode::kDeviceOom, "device out of memory (injected)");
    }
  }

  void recordTimes(const StageTimes& times) {
    std::lock_guard<std::mutex> lock(timesMutex);
    for (const auto& [stage, ms] : times) {
      lastTimes[stage] = ms;
      totalTimes[stage] += ms;
    }
  }

  Bundle& loadedBundle() {
    if (executor->cancelled() || !bundle) {
      throw CoreError(ErrorCode::kEngineClosed, "the engine is closed");
    }
    return *bundle;
  }

  std::shared_ptr<ImageEmbedding> encodeImage(const ImageRequest& request, const ImageMaps& maps);
  // Checked requests through one vision pass computing what any of them asks for; one
  // embedding per request (holding what it asked for), in order.
  std::vector<std::shared_ptr<ImageEmbedding>> encodeImages(
      const std::vector<const ImageRequest*>& requests, const std::vector<ImageMaps>& maps);
  std::shared_ptr<ImageEmbedding> deriveImage(const ImageEmbedding& image, const ImageMaps& maps);
  // One batch taken from imageBatches: each image's outcome to its callback.
  void encodeBatch(std::vector<PendingImage> images);
  // Submits the batch task (imageBatches->push asked for it); refused: every waiting image
  // fails with ENGINE_CLOSED.
  static void scheduleImageBatches(const std::shared_ptr<Engine>& self);
  // The batch task: batches until none wait, letting other tasks run between batches.
  static void runImageBatches(const std::shared_ptr<Engine>& self);
  std::vector<std::shared_ptr<TextEmbedding>> encodeText(const TextRequest& request);
  std::vector<ConceptInstances> detect(const ImageEmbedding& image,
                                       const std::vector<ConceptQuery>& queries, double threshold);
  std::vector<PointInstance> segmentPoints(const ImageEmbedding& image,
                                           const std::vector<PointQuery>& queries);
};

std::string normalizeDevice(const std::string& device) {
  c10::Device parsed(c10::kCPU);
  try {
    parsed = c10::Device(device);
  } catch (const c10::Error&) {
    badInput("invalid device '" + device + "' (expected \"cpu\" or \"cuda:N\")");
  }
  if (parsed.is_cpu()) {
    if (parsed.has_index() && parsed.index() != 0) badInput("invalid device '" + device + "'");
    return "cpu";
  }
  if (!parsed.is_cuda()) badInput("unsupported device '" + device + "' (use cpu or cuda:N)");
  if (!torch::cuda::is_available()) {
    throw CoreError(ErrorCode::kDeviceUnavailable,
                    "device " + device + " is unavailable: no usable CUDA device (or LibTorch " +
                        "was built without CUDA)");
  }
  int64_t index = parsed.has_index() ? parsed.index() : 0;
  int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    throw CoreError(ErrorCode::kDeviceUnavailable, "device " + device +
                                                       " is unavailable: this machine has " +
                                                       std::to_string(count) + " CUDA device(s)");
  }
  return "cuda:" + std::to_string(index);
}

Engine::Engine(const std::string& device) : impl_(std::make_unique<Impl>()) {
  impl_->device = device;
  impl_->executor = std::make_unique<Executor>(device);
}

Engine::~Engine() = default;

const BundleInfo& Engine::info() const { return impl_->info; }
const std::string& Engine::device() const { return impl_->device; }

namespace {

BundleInfo infoOf(const Manifest& m) {
  BundleInfo info;
  info.modelId = m.modelId;
  info.randomWeights = m.randomWeights;
  info.seed = m.seed;
  info.checksum = m.checksum;
  info.formatVersion = m.formatVersion;
  info.dtype = m.dtype;
  info.resolution = m.resolution;
  info.patchSize = m.patchSize;
  info.featureSize = m.featureSize;
  info.maskSize = m.maskSize;
  info.hiddenSize = m.hiddenSize;
  info.numQueries = m.numQueries;
  info.contextLength = m.text.contextLength;
  info.vocabSize = m.text.vocabSize;
  info.bosId = m.text.bosId;
  info.eosId = m.text.eosId;
  info.padId = m.text.padId;
  info.vocabFile = m.text.vocabFile;
  info.torchVersion = m.torchVersion;
  info.transformersVersion = m.transformersVersion;
  info.videoAvailable = m.tracker.has_value();
  info.conceptAvailable = m.concept.has_value();
  info.visionParts = m.visionParts.has_value();
  return info;
}

// Queues `work` (returning T) on the engine's executor and reports its outcome to `done`;
// counts the task in `tasksRun` before `done` runs. While `injectedOom` is positive, a task
// fails with DEVICE_OOM instead of running (fault tests).
template <typename T, typename Work>
void runOnExecutor(Engine::Impl& impl, Done<T> done, Work work, CancelToken cancel = nullptr) {
  auto task = [&impl, done, work = std::move(work), cancel = std::move(cancel)]() mutable {
    Outcome<T> outcome;
    if (cancel && cancel->isCancelled()) {
      // The caller went away while this waited: no model work, not counted as a task run.
      { Work dropped = std::move(work); }
      outcome.error = CoreError(ErrorCode::kCancelled, "the call was cancelled before it ran");
      done(std::move(outcome));
      return;
    }
    {
      // Destroyed before `done`: what the work captured (embeddings) is let go of before the
      // caller learns the outcome, so a released embedding's memory is free by then.
      Work running = std::move(work);
      try {
        impl.checkRunnable();
        outcome.value = running();
      } catch (...) {
        outcome.error = toCoreError(std::current_exception());
      }
      // While `running` still holds what keeps the engine (and this counter) alive.
      ++impl.tasksRun;
    }
    done(std::move(outcome));
  };
  if (!impl.executor->submit(std::move(task))) {
    Outcome<T> refused;
    refused.error = CoreError(ErrorCode::kEngineClosed, "the engine is closed");
    done(std::move(refused));
  }
}

}  // namespace

namespace {

void checkBatching(const ImageBatching& batching) {
  if (batching.maxSize < 1 || batching.maxSize > kMaxImageBatch) {
    badInput("image batch size must be between 1 and " + std::to_string(kMaxImageBatch) + " (got " +
             std::to_string(batching.maxSize) + ")");
  }
  if (batching.waitMs < 0 || batching.waitMs > kMaxImageBatchWaitMs) {
    badInput("image batch wait must be between 0 and " + std::to_string(kMaxImageBatchWaitMs) +
             " ms (got " + std::to_string(batching.waitMs) + ")");
  }
}

// Whether the vision encoder's pixel_values take any batch size (exporter version 5).
bool takesImageBatches(const Manifest& manifest) {
  const ModuleSpec& encoder = manifest.visionEncoder;
  const int index = encoder.inputIndex("pixel_values");
  return index >= 0 && !encoder.inputs[index].shape.empty() &&
         encoder.inputs[index].shape.front().isSymbolic();
}

}  // namespace

std::shared_ptr<Engine> Engine::load(const std::string& bundleDir, const std::string& device,
                                     Done<std::shared_ptr<Engine>> done, ImageBatching batching,
                                     bool compiled) {
  useFixedMmapThreshold();
  std::shared_ptr<Engine> engine;
  try {
    checkBatching(batching);
    engine.reset(new Engine(normalizeDevice(device)));
  } catch (...) {
    Outcome<std::shared_ptr<Engine>> failed;
    failed.error = toCoreError(std::current_exception());
    done(std::move(failed));
    return nullptr;
  }
  if (batching.maxSize > 1) {
    engine->impl_->imageBatches = std::make_unique<ImageBatchQueue>(
        static_cast<size_t>(batching.maxSize), std::chrono::milliseconds(batching.waitMs));
  }
  runOnExecutor<std::shared_ptr<Engine>>(
      *engine->impl_, std::move(done), [engine, bundleDir, compiled]() {
        try {
          Impl& impl = *engine->impl_;
          impl.bundle = Bundle::load(bundleDir, c10::Device(impl.device), compiled);
          if (impl.imageBatches && !takesImageBatches(impl.bundle->manifest())) {
            throw CoreError(ErrorCode::kModelLoad,
                            "image batching needs a bundle whose vision encoder takes a batch "
                            "(exporter version 5 or later); this bundle's takes one image per "
                            "call: export it again with tools/export_sam3.py, or batch size 1");
          }
          impl.info = infoOf(impl.bundle->manifest());
          impl.info.compiled = compiled;
          impl.bundleId = impl.bundle->id();
          return engine;
        } catch (...) {
          // Nobody will use this engine: let its thread end once this task returns.
          engine->impl_->bundle.reset();
          engine->impl_->executor->close(nullptr);
          throw;
        }
      });
  return engine;
}

void Engine::encodeImage(const ImageRequest& request, Done<std::shared_ptr<ImageEmbedding>> done,
                         CancelToken cancel, ImageMaps maps) {
  auto self = shared_from_this();
  if (impl_->imageBatches) {
    PendingImage image{request, maps, std::move(done), std::move(cancel)};
    if (impl_->imageBatches->push(std::move(image))) Impl::scheduleImageBatches(self);
    return;
  }
  runOnExecutor<std::shared_ptr<ImageEmbedding>>(
      *impl_, std::move(done),
      [self, request, maps] { return self->impl_->encodeImage(request, maps); }, std::move(cancel));
}

void Engine::deriveImage(std::shared_ptr<const ImageEmbedding> image, ImageMaps maps,
                         Done<std::shared_ptr<ImageEmbedding>> done, CancelToken cancel) {
  auto self = shared_from_this();
  runOnExecutor<std::shared_ptr<ImageEmbedding>>(
      *impl_, std::move(done),
      [self, image = std::move(image), maps] {
        if (!image) badInput("image embedding is missing");
        return self->impl_->deriveImage(*image, maps);
      },
      std::move(cancel));
}

void Engine::encodeText(const TextRequest& request,
                        Done<std::vector<std::shared_ptr<TextEmbedding>>> done,
                        CancelToken cancel) {
  auto self = shared_from_this();
  runOnExecutor<std::vector<std::shared_ptr<TextEmbedding>>>(
      *impl_, std::move(done), [self, request] { return self->impl_->encodeText(request); },
      std::move(cancel));
}

void Engine::detect(std::shared_ptr<const ImageEmbedding> image, std::vector<ConceptQuery> queries,
                    double threshold, Done<std::vector<ConceptInstances>> done,
                    CancelToken cancel) {
  auto self = shared_from_this();
  runOnExecutor<std::vector<ConceptInstances>>(
      *impl_, std::move(done),
      [self, image = std::move(image), queries = std::move(queries), threshold] {
        if (!image) badInput("image embedding is missing");
        return self->impl_->detect(*image, queries, threshold);
      },
      std::move(cancel));
}

void Engine::segmentPoints(std::shared_ptr<const ImageEmbedding> image,
                           std::vector<PointQuery> queries, Done<std::vector<PointInstance>> done,
                           CancelToken cancel) {
  auto self = shared_from_this();
  runOnExecutor<std::vector<PointInstance>>(
      *impl_, std::move(done),
      [self, image = std::move(image), queries = std::move(queries)] {
        if (!image) badInput("image embedding is missing");
        return self->impl_->segmentPoints(*image, queries);
      },
      std::move(cancel));
}

std::shared_ptr<TrackerSession> Engine::createTracker(const TrackerOptions& options) {
  if (!impl_->info.videoAvailable) {
    badInput(
        "video is unavailable: the bundle has no tracker modules (bundle format 1); "
        "export it again with tools/export_sam3.py");
  }
  if (options.numFrames < 1 || options.numFrames > kMaxTrackerFrames) {
    badInput("numFrames must be between 1 and " + std::to_string(kMaxTrackerFrames));
  }
  if (options.width < 1 || options.height < 1 || options.width > kMaxImageSide ||
      options.height > kMaxImageSide) {
    badInput("width and height must be between 1 and " + std::to_string(kMaxImageSide));
  }
  if (options.memoryFrames < 1) badInput("memoryFrames must be at least 1");
  return std::make_shared<TrackerSession>(impl_->bundleId, options);
}

namespace {

void checkSession(const std::shared_ptr<TrackerSession>& session, const Bundle& bundle) {
  if (!session) badInput("tracker session is missing");
  if (session->bundleId() != bundle.id()) {
    badInput("the tracker session was created by another engine");
  }
}

}  // namespace

void Engine::trackerAddPrompt(std::shared_ptr<TrackerSession> session, const FrameRequest& frame,
                              TrackerPrompt prompt, Done<TrackerFrame> done) {
  auto self = shared_from_this();
  runOnExecutor<TrackerFrame>(
      *impl_, std::move(done),
      [self, session = std::move(session), frame, prompt = std::move(prompt)] {
        Impl& impl = *self->impl_;
        Bundle& bundle = impl.loadedBundle();
        checkSession(session, bundle);
        StageTimes times;
        TrackerFrame result = session->addPrompt(bundle, *impl.executor, frame, prompt, times);
        impl.recordTimes(times);
        return result;
      });
}

void Engine::trackerAddConcept(std::shared_ptr<TrackerSession> session, const FrameRequest& frame,
                               ConceptPrompt prompt, Done<ConceptResult> done) {
  auto self = shared_from_this();
  runOnExecutor<ConceptResult>(
      *impl_, std::move(done),
      [self, session = std::move(session), frame, prompt = std::move(prompt)] {
        Impl& impl = *self->impl_;
        Bundle& bundle = impl.loadedBundle();
        checkSession(session, bundle);
        StageTimes times;
        ConceptResult result = session->addConcept(bundle, *impl.executor, frame, prompt, times);
        impl.recordTimes(times);
        return result;
      });
}

void Engine::trackerStep(std::shared_ptr<TrackerSession> session, const FrameRequest& frame,
                         StepRequest request, Done<std::vector<TrackerFrame>> done) {
  auto self = shared_from_this();
  runOnExecutor<std::vector<TrackerFrame>>(
      *impl_, std::move(done), [self, session = std::move(session), frame, request] {
        Impl& impl = *self->impl_;
        Bundle& bundle = impl.loadedBundle();
        checkSession(session, bundle);
        StageTimes times;
        std::vector<TrackerFrame> result =
            session->step(bundle, *impl.executor, frame, request, times);
        impl.recordTimes(times);
        return result;
      });
}

void Engine::trackerRemoveObject(std::shared_ptr<TrackerSession> session, int64_t objId,
                                 Done<bool> done) {
  auto self = shared_from_this();
  runOnExecutor<bool>(*impl_, std::move(done), [self, session = std::move(session), objId] {
    checkSession(session, self->impl_->loadedBundle());
    return session->removeObject(objId);
  });
}

void Engine::trackerRemoveConcept(std::shared_ptr<TrackerSession> session, int64_t conceptId,
                                  Done<std::vector<int64_t>> done) {
  auto self = shared_from_this();
  runOnExecutor<std::vector<int64_t>>(*impl_, std::move(done),
                                      [self, session = std::move(session), conceptId] {
                                        checkSession(session, self->impl_->loadedBundle());
                                        return session->removeConcept(conceptId);
                                      });
}

void Engine::trackerReset(std::shared_ptr<TrackerSession> session, Done<int64_t> done) {
  auto self = shared_from_this();
  runOnExecutor<int64_t>(*impl_, std::move(done), [self, session = std::move(session)] {
    checkSession(session, self->impl_->loadedBundle());
    return session->reset();
  });
}

int64_t Engine::tasksRun() const { return impl_->tasksRun.load(); }

std::map<int64_t, int64_t> Engine::imageBatchCounts() const {
  std::lock_guard<std::mutex> lock(impl_->timesMutex);
  return impl_->batchCounts;
}

void Engine::injectDeviceOutOfMemory(int64_t count) {
  if (count < 0) badInput("count must be >= 0");
  impl_->injectedOom.store(count);
}

StageTimes Engine::lastStageTimes() const {
  std::lock_guard<std::mutex> lock(impl_->timesMutex);
  return impl_->lastTimes;
}

StageTimes Engine::stageTotals() const {
  std::lock_guard<std::mutex> lock(impl_->timesMutex);
  return impl_->totalTimes;
}

void Engine::close(std::function<void()> drained) {
  auto self = shared_from_this();
  impl_->executor->close([self, drained = std::move(drained)] {
    // Free the modules now; embeddings held by JS stay valid memory until collected.
    self->impl_->bundle.reset();
    if (drained) drained();
  });
}

void Engine::cancelAndJoin() { impl_->executor->cancelAndJoin(); }

namespace {

void checkImageRequest(const ImageRequest& request) {
  if (request.rgb == nullptr) badInput("rgb buffer is missing");
  if (request.width <= 0 || request.height <= 0) badInput("image width and height must be > 0");
  if (request.width > kMaxImageSide || request.height > kMaxImageSide) {
    badInput("image sides must be at most " + std::to_string(kMaxImageSide) + " pixels");
  }
  size_t expected = static_cast<size_t>(request.width * request.height * 3);
  if (request.byteLength != expected) {
    badInput("rgb buffer has " + std::to_string(request.byteLength) + " bytes, expected " +
             std::to_string(expected) + " (width * height * 3)");
  }
}

void checkMaps(const ImageMaps& maps) {
  if (!maps.detector && !maps.tracker && !maps.trunk) {
    badInput("ask for at least one of the image's maps (detector, tracker, trunk)");
  }
}

// Row b of each map `keep` asks for (a copy: a view of the batch would hold the whole batch).
std::unique_ptr<ImageEmbedding::Tensors> rowOf(const VisionMaps& maps, int64_t b,
                                               const ImageMaps& keep) {
  auto tensors = std::make_unique<ImageEmbedding::Tensors>();
  for (size_t i = 0; i < 3; ++i) {
    if (keep.detector && maps.detector[i].defined()) {
      tensors->fpn[i] = owned(maps.detector[i].narrow(0, b, 1));
    }
    if (keep.tracker && maps.tracker[i].defined()) {
      tensors->trackerFpn[i] = owned(maps.tracker[i].narrow(0, b, 1));
    }
  }
  if (keep.trunk && maps.trunk.defined()) tensors->trunk = owned(maps.trunk.narrow(0, b, 1));
  return tensors;
}

}  // namespace

std::shared_ptr<ImageEmbedding> Engine::Impl::encodeImage(const ImageRequest& request,
                                                          const ImageMaps& maps) {
  loadedBundle();
  checkImageRequest(request);
  checkMaps(maps);
  return encodeImages({&request}, {maps}).front();
}

std::vector<std::shared_ptr<ImageEmbedding>> Engine::Impl::encodeImages(
    const std::vector<const ImageRequest*>& requests, const std::vector<ImageMaps>& maps) {
  Bundle& bundle = loadedBundle();
  const Manifest& m = bundle.manifest();
  StageClock clock(*executor);
  ImageNormalization normalization{m.imageMean, m.imageStd};
  std::vector<at::Tensor> pixels;
  pixels.reserve(requests.size());
  for (const ImageRequest* request : requests) {
    pixels.push_back(preprocessImage(request->rgb, request->width, request->height, m.resolution,
                                     normalization, bundle.device()));
  }
  at::Tensor batch = pixels.size() == 1 ? pixels.front() : at::cat(pixels, 0);
  pixels.clear();
  clock.lap("preprocess");
  ImageMaps wanted{false, false, false};
  for (const ImageMaps& asked : maps) {
    wanted = {wanted.detector || asked.detector, wanted.tracker || asked.tracker,
              wanted.trunk || asked.trunk};
  }
  VisionMaps outputs = encodeVision(bundle, batch, wanted);
  batch.reset();
  const int64_t B = static_cast<int64_t>(requests.size());
  std::vector<std::shared_ptr<ImageEmbedding>> embeddings;
  embeddings.reserve(requests.size());
  for (int64_t b = 0; b < B; ++b) {
    const ImageRequest& request = *requests[static_cast<size_t>(b)];
    // One vision encoder (formats 1 to 3) computes both necks' maps, and they are kept.
    const ImageMaps keep = bundle.hasVisionParts() ? maps[static_cast<size_t>(b)] : ImageMaps{};
    embeddings.push_back(std::make_shared<ImageEmbedding>(bundle.id(), request.width,
                                                          request.height, rowOf(outputs, b, keep)));
  }
  clock.lap("vision_encoder");
  recordTimes(clock.times());
  std::lock_guard<std::mutex> lock(timesMutex);
  ++batchCounts[B];
  return embeddings;
}

std::shared_ptr<ImageEmbedding> Engine::Impl::deriveImage(const ImageEmbedding& image,
                                                          const ImageMaps& maps) {
  Bundle& bundle = loadedBundle();
  if (image.bundleId() != bundle.id()) {
    badInput("the image embedding was computed by another engine");
  }
  checkMaps(maps);
  const ImageMaps& held = image.maps();
  const ImageMaps missing{maps.detector && !held.detector, maps.tracker && !held.tracker, false};
  if ((missing.detector || missing.tracker || (maps.trunk && !held.trunk)) && !held.trunk) {
    badInput(
        "the image embedding holds neither the maps asked for nor the trunk output to "
        "compute them from: encode the image again");
  }
  StageClock clock(*executor);
  VisionMaps computed;
  if (missing.detector || missing.tracker) {
    computed = visionNecks(bundle, image.tensors().trunk, missing);
    clock.lap("vision_neck");
    recordTimes(clock.times());
  }
  const ImageEmbedding::Tensors& have = image.tensors();
  auto tensors = std::make_unique<ImageEmbedding::Tensors>();
  for (size_t i = 0; i < 3; ++i) {
    if (maps.detector) tensors->fpn[i] = held.detector ? have.fpn[i] : computed.detector[i];
    if (maps.tracker) {
      tensors->trackerFpn[i] = held.tracker ? have.trackerFpn[i] : computed.tracker[i];
    }
  }
  if (maps.trunk) tensors->trunk = have.trunk;
  return std::make_shared<ImageEmbedding>(bundle.id(), image.width(), image.height(),
                                          std::move(tensors));
}

void Engine::Impl::encodeBatch(std::vector<PendingImage> images) {
  using Embedding = std::shared_ptr<ImageEmbedding>;
  std::vector<Outcome<Embedding>> outcomes(images.size());
  std::vector<size_t> runnable;  // checked images, in arrival order
  int64_t counted = 0;           // images that are not cancelled count as tasks run
  for (size_t i = 0; i < images.size(); ++i) {
    const CancelToken& cancel = images[i].cancel;
    if (cancel && cancel->isCancelled()) {
      outcomes[i].error = CoreError(ErrorCode::kCancelled, "the call was cancelled before it ran");
      continue;
    }
    ++counted;
    try {
      checkImageRequest(images[i].request);
      checkMaps(images[i].maps);
      runnable.push_back(i);
    } catch (...) {
      outcomes[i].error = toCoreError(std::current_exception());
    }
  }
  auto encode = [&](const std::vector<size_t>& indices) {
    checkRunnable();
    std::vector<const ImageRequest*> requests;
    std::vector<ImageMaps> maps;
    for (size_t i : indices) {
      requests.push_back(&images[i].request);
      maps.push_back(images[i].maps);
    }
    std::vector<Embedding> embeddings = encodeImages(requests, maps);
    for (size_t k = 0; k < indices.size(); ++k) outcomes[indices[k]].value = embeddings[k];
  };
  if (!runnable.empty()) {
    try {
      encode(runnable);
    } catch (...) {
      const CoreError error = toCoreError(std::current_exception());
      const bool retryAlone = error.code() == ErrorCode::kDeviceOom && runnable.size() > 1;
      for (size_t i : runnable) {
        if (!retryAlone) {
          outcomes[i].error = error;
          continue;
        }
        try {
          encode({i});
        } catch (...) {
          outcomes[i].error = toCoreError(std::current_exception());
        }
      }
    }
  }
  tasksRun += counted;
  for (size_t i = 0; i < images.size(); ++i) images[i].done(std::move(outcomes[i]));
}

void Engine::Impl::scheduleImageBatches(const std::shared_ptr<Engine>& self) {
  Impl& impl = *self->impl_;
  if (impl.executor->submit([self] { runImageBatches(self); })) return;
  for (PendingImage& image : impl.imageBatches->drain()) {
    Outcome<std::shared_ptr<ImageEmbedding>> refused;
    refused.error = CoreError(ErrorCode::kEngineClosed, "the engine is closed");
    image.done(std::move(refused));
  }
}

void Engine::Impl::runImageBatches(const std::shared_ptr<Engine>& self) {
  Impl& impl = *self->impl_;
  bool more = true;
  while (more) {
    impl.encodeBatch(impl.imageBatches->take(more));
    // Queued tasks of other requests run between batches; once the executor is closing (it
    // refuses new tasks but runs what it holds), the remaining batches run here.
    if (more && impl.executor->submit([self] { runImageBatches(self); })) return;
  }
}

std::vector<std::shared_ptr<TextEmbedding>> Engine::Impl::encodeText(const TextRequest& request) {
  Bundle& bundle = loadedBundle();
  const Manifest& m = bundle.manifest();
  const int64_t L = m.text.contextLength;
  if (request.batch <= 0) badInput("batch must be > 0");
  if (request.ids == nullptr || request.mask == nullptr) badInput("ids and mask are required");
  size_t expected = static_cast<size_t>(request.batch * L);
  if (request.idsLength != expected || request.maskLength != expected) {
    badInput("ids and mask must each hold batch * contextLength = " + std::to_string(expected) +
             " values (got " + std::to_string(request.idsLength) + " and " +
             std::to_string(request.maskLength) + ")");
  }
  for (size_t i = 0; i < expected; ++i) {
    if (request.ids[i] < 0 || request.ids[i] >= m.text.vocabSize) {
      badInput("token id " + std::to_string(request.ids[i]) + " is outside the vocabulary");
    }
    if (request.mask[i] != 0 && request.mask[i] != 1) badInput("mask values must be 0 or 1");
  }

  StageClock clock(*executor);
  at::TensorOptions int32 = at::TensorOptions().dtype(at::kInt);
  at::Tensor ids = at::from_blob(const_cast<int32_t*>(request.ids), {request.batch, L}, int32);
  at::Tensor mask = at::from_blob(const_cast<int32_t*>(request.mask), {request.batch, L}, int32);
  std::vector<std::shared_ptr<TextEmbedding>> embeddings;
  embeddings.reserve(static_cast<size_t>(request.batch));
  for (int64_t start = 0; start < request.batch; start += kMaxTextBatch) {
    int64_t rows = std::min(kMaxTextBatch, request.batch - start);
    at::Tensor chunkMask = mask.narrow(0, start, rows).to(bundle.device(), at::kLong);
    NamedTensors outputs = bundle.call(
        ModuleKind::kTextEncoder,
        {{"input_ids", ids.narrow(0, start, rows)}, {"attention_mask", chunkMask}}, {{"B", rows}});
    const at::Tensor& features = outputs.at("text_features");
    for (int64_t row = 0; row < rows; ++row) {
      auto tensors = std::make_unique<TextEmbedding::Tensors>();
      // Each embedding owns a copy of its row so that freeing one frees its memory.
      tensors->features = features.narrow(0, row, 1).clone();
      tensors->mask = chunkMask.narrow(0, row, 1).clone();
      embeddings.push_back(std::make_shared<TextEmbedding>(bundle.id(), std::move(tensors)));
    }
  }
  clock.lap("text_encoder");
  recordTimes(clock.times());
  return embeddings;
}

std::vector<ConceptInstances> Engine::Impl::detect(const ImageEmbedding& image,
                                                   const std::vector<ConceptQuery>& queries,
                                                   double threshold) {
  Bundle& bundle = loadedBundle();
  if (!std::isfinite(threshold)) badInput("threshold must be a finite number");
  if (image.bundleId() != bundle.id()) {
    badInput("the image embedding was computed by another engine");
  }
  if (!image.maps().detector) badInput("the image embedding holds no detector maps");
  for (size_t q = 0; q < queries.size(); ++q) {
    const ConceptQuery& query = queries[q];
    std::string where = "query " + std::to_string(q) + ": ";
    if (!query.text) badInput(where + "text embedding is missing");
    if (query.text->bundleId() != bundle.id()) {
      badInput(where + "the text embedding was computed by another engine");
    }
    if (query.boxes.size() != 4 * query.boxLabels.size()) {
      badInput(where + "boxes must hold 4 numbers per box label");
    }
    for (float v : query.boxes) {
      if (!std::isfinite(v)) badInput(where + "box coordinates must be finite");
    }
    for (int32_t label : query.boxLabels) {
      if (label != 0 && label != 1) badInput(where + "box labels must be 0 or 1");
    }
  }

  const int64_t H = image.height(), W = image.width();
  // Scores lie in (0, 1): clamping changes no decision and keeps the float conversion defined.
  const float keepAbove = static_cast<float>(std::min(2.0, std::max(-1.0, threshold)));
  const c10::Device device = bundle.device();
  const ImageEmbedding::Tensors& features = image.tensors();
  std::vector<ConceptInstances> results(queries.size());
  StageClock clock(*executor);

  for (size_t chunkStart = 0; chunkStart < queries.size();
       chunkStart += kMaxQueriesPerDetectorCall) {
    const size_t count = std::min(kMaxQueriesPerDetectorCall, queries.size() - chunkStart);
    const int64_t B = static_cast<int64_t>(count);
    size_t maxBoxes = 1;  // a text-only prompt still passes one padding box
    for (size_t q = 0; q < count; ++q) {
      maxBoxes = std::max(maxBoxes, queries[chunkStart + q].boxLabels.size());
    }
    const int64_t NB = static_cast<int64_t>(maxBoxes);

    std::vector<at::Tensor> textRows, maskRows;
    at::Tensor boxes = at::zeros({B, NB, 4}, at::kFloat);
    at::Tensor labels = at::full({B, NB}, -10, at::kLong);  // -10: padding box
    auto boxData = boxes.accessor<float, 3>();
    auto labelData = labels.accessor<int64_t, 2>();
    for (size_t q = 0; q < count; ++q) {
      const ConceptQuery& query = queries[chunkStart + q];
      textRows.push_back(query.text->tensors().features);
      maskRows.push_back(query.text->tensors().mask);
      for (size_t b = 0; b < query.boxLabels.size(); ++b) {
        for (int c = 0; c < 4; ++c) boxData[q][b][c] = query.boxes[4 * b + c];
        labelData[q][b] = query.boxLabels[b];
      }
    }
    NamedTensors outputs = bundle.call(ModuleKind::kDetector,
                                       {{"fpn_0", features.fpn[0]},
                                        {"fpn_1", features.fpn[1]},
                                        {"fpn_2", features.fpn[2]},
                                        {"text_features", at::cat(textRows, 0)},
                                        {"text_mask", at::cat(maskRows, 0)},
                                        {"boxes", boxes},
                                        {"box_labels", labels}},
                                       {{"B", B}, {"NB", NB}});
    clock.lap("detector");

    at::Tensor scores = (at::sigmoid(outputs.at("pred_logits").to(at::kFloat)) *
                         at::sigmoid(outputs.at("presence_logits").to(at::kFloat)))
                            .to(at::kCPU)
                            .contiguous();
    at::Tensor predBoxes = outputs.at("pred_boxes").to(at::kCPU, at::kFloat).contiguous();
    const at::Tensor& maskLogits = outputs.at("pred_masks");
    const int64_t Q = scores.size(1);

    for (int64_t b = 0; b < B; ++b) {
      ConceptInstances& result = results[chunkStart + static_cast<size_t>(b)];
      const float* rowScores = scores[b].data_ptr<float>();
      std::vector<int64_t> kept;
      for (int64_t i = 0; i < Q; ++i) {
        if (rowScores[i] > keepAbove) kept.push_back(i);
      }
      // Highest score first; equal scores keep query order.
      std::stable_sort(kept.begin(), kept.end(),
                       [&](int64_t x, int64_t y) { return rowScores[x] > rowScores[y]; });
      const float* rowBoxes = predBoxes[b].data_ptr<float>();
      for (int64_t i : kept) {
        // pred_boxes are normalized x0, y0, x1, y1; results are normalized cx, cy, w, h.
        const float* xyxy = rowBoxes + 4 * i;
        result.scores.push_back(rowScores[i]);
        result.boxes.push_back((xyxy[0] + xyxy[2]) / 2);
        result.boxes.push_back((xyxy[1] + xyxy[3]) / 2);
        result.boxes.push_back(xyxy[2] - xyxy[0]);
        result.boxes.push_back(xyxy[3] - xyxy[1]);
      }
      at::Tensor index =
          at::tensor(at::ArrayRef<int64_t>(kept.data(), kept.size()), at::kLong).to(device);
      clock.lap("postprocess");
      result.masks = encodeMasks(maskLogits[b].index_select(0, index), H, W, clock);
    }
  }
  StageTimes times = clock.times();
  for (const char* stage : {"detector", "postprocess", "rle"}) times.emplace(stage, 0.0);
  recordTimes(times);
  return results;
}

std::vector<PointInstance> Engine::Impl::segmentPoints(const ImageEmbedding& image,
                                                       const std::vector<PointQuery>& queries) {
  Bundle& bundle = loadedBundle();
  if (image.bundleId() != bundle.id()) {
    badInput("the image embedding was computed by another engine");
  }
  if (!image.maps().tracker) badInput("the image embedding holds no tracker maps");
  for (size_t q = 0; q < queries.size(); ++q) checkPointQuery(queries[q], q);

  const int64_t H = image.height(), W = image.width();
  // Prompts are in pixels of the R x R model input (float32, as the reference scales them).
  const float R = static_cast<float>(bundle.manifest().resolution);
  const ImageEmbedding::Tensors& features = image.tensors();
  std::vector<PointInstance> results;
  results.reserve(queries.size());
  StageClock clock(*executor);

  for (const PointQuery& query : queries) {
    const size_t clicks = query.pointLabels.size();
    const bool hasBox = !query.box.empty();
    const int64_t N = static_cast<int64_t>(clicks) + (hasBox ? 2 : 0);
    at::Tensor points = at::empty({1, 1, N, 2}, at::kFloat);
    at::Tensor labels = at::empty({1, 1, N}, at::kLong);
    float* xy = points.data_ptr<float>();
    int64_t* label = labels.data_ptr<int64_t>();
    for (size_t i = 0; i < clicks; ++i) {
      xy[2 * i] = query.points[2 * i] * R;
      xy[2 * i + 1] = query.points[2 * i + 1] * R;
      label[i] = query.pointLabels[i];
    }
    if (hasBox) {
      // The box as its two corner points after the clicks (labels 2: top-left, 3:
      // bottom-right). As the reference: normalized xyxy in double (Python floats), rounded
      // to float32, then scaled in float32.
      const double cx = query.box[0], cy = query.box[1], w = query.box[2], h = query.box[3];
      const float corners[4] = {static_cast<float>(cx - w / 2), static_cast<float>(cy - h / 2),
                                static_cast<float>(cx + w / 2), static_cast<float>(cy + h / 2)};
      for (size_t c = 0; c < 4; ++c) xy[2 * clicks + c] = corners[c] * R;
      label[clicks] = 2;
      label[clicks + 1] = 3;
    }
    // SAM's rule: a single click without a box is ambiguous (part, object or whole).
    const bool multimask = clicks == 1 && !hasBox;
    NamedTensors outputs =
        bundle.call(multimask ? ModuleKind::kPointDecoderMultimask : ModuleKind::kPointDecoder,
                    {{"tracker_fpn_0", features.trackerFpn[0]},
                     {"tracker_fpn_1", features.trackerFpn[1]},
                     {"tracker_fpn_2", features.trackerFpn[2]},
                     {"points", points},
                     {"point_labels", labels}},
                    {{"B", 1}, {"N", N}});
    clock.lap("point_decoder");

    // iou_scores [1, 1, K], mask_logits [1, 1, K, M, M].
    at::Tensor iou = outputs.at("iou_scores").to(at::kCPU, at::kFloat).contiguous();
    const int64_t K = iou.numel();
    if (K == 0) throw CoreError(ErrorCode::kInternal, "the point decoder predicted no mask");
    const int64_t best = firstArgmax(iou.data_ptr<float>(), K);
    PointInstance instance;
    instance.score = iou.data_ptr<float>()[best];
    at::Tensor logits = outputs.at("mask_logits")[0][0].narrow(0, best, 1);
    clock.lap("postprocess");
    std::vector<MaskBounds> bounds;
    instance.mask = std::move(encodeMasks(logits, H, W, clock, &bounds).front());
    instance.box = normalizedBox(bounds.front(), H, W);
    results.push_back(std::move(instance));
  }
  StageTimes times = clock.times();
  for (const char* stage : {"point_decoder", "postprocess", "rle"}) times.emplace(stage, 0.0);
  recordTimes(times);
  return results;
}

}  // namespace sam3
