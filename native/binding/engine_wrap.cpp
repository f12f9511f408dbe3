#include "engine_wrap.h"

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "addon_data.h"
#include "arguments.h"
#include "async_call.h"
#include "cancel_token_wrap.h"
#include "embedding_wrap.h"
#include "tracker_wrap.h"

namespace sam3::binding {

namespace {

std::string stringMember(const Napi::Object& object, const char* name) {
  Napi::Value value = object.Get(name);
  if (!value.IsString()) badArgument(std::string(name) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

template <typename TypedArray>
TypedArray typedArrayArgument(const Napi::Value& value, napi_typedarray_type type,
                              const std::string& name, const char* typeName) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != type) {
    badArgument(name + " must be a " + typeName);
  }
  return value.As<TypedArray>();
}

// A typed array's values, copied (query arrays are small, so the JS arrays need not stay
// alive while the call is queued).
template <typename TypedArray>
auto copyOf(const TypedArray& array) {
  using Element = std::remove_cv_t<std::remove_pointer_t<decltype(array.Data())>>;
  return std::vector<Element>(array.Data(), array.Data() + array.ElementLength());
}

std::shared_ptr<const ImageEmbedding> imageArgument(Napi::Env env, const Napi::Value& value) {
  std::shared_ptr<const ImageEmbedding> image = ImageEmbeddingWrap::unwrap(env, value, "image");
  if (!image) badArgument("image must be an ImageEmbedding from encodeImage");
  return image;
}

// An optional array of map names ("detector", "tracker", "trunk"); undefined: the default
// (both necks' maps). Whether it asks for anything is the core's check.
ImageMaps mapsArgument(const Napi::Value& value, const std::string& name) {
  if (value.IsUndefined()) return ImageMaps{};
  if (!value.IsArray()) badArgument(name + " must be an array of map names");
  Napi::Array list = value.As<Napi::Array>();
  ImageMaps maps{false, false, false};
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value item = list.Get(i);
    const std::string entry = item.IsString() ? item.As<Napi::String>().Utf8Value() : "";
    if (entry == "detector") {
      maps.detector = true;
    } else if (entry == "tracker") {
      maps.tracker = true;
    } else if (entry == "trunk") {
      maps.trunk = true;
    } else {
      badArgument(name + "[" + std::to_string(i) +
                  "] must be \"detector\", \"tracker\" or \"trunk\"");
    }
  }
  return maps;
}

// An embedding promise's result: the JS ImageEmbedding.
Napi::Value wrapImage(Napi::Env env, const std::shared_ptr<ImageEmbedding>& embedding) {
  return ImageEmbeddingWrap::wrap(env, embedding);
}

// The queries argument: a JS array of objects, each turned into a Query by
// `parse(object, where)`, where `where` names the element in messages ("queries[2]").
template <typename Query, typename Parse>
std::vector<Query> queryList(const Napi::Value& value, Parse parse) {
  if (!value.IsArray()) badArgument("queries must be an array");
  Napi::Array list = value.As<Napi::Array>();
  std::vector<Query> queries;
  queries.reserve(list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) {
    std::string where = "queries[" + std::to_string(i) + "]";
    Napi::Value item = list.Get(i);
    if (!item.IsObject()) badArgument(where + " must be an object");
    queries.push_back(parse(item.As<Napi::Object>(), where));
  }
  return queries;
}

Napi::Object infoObject(Napi::Env env, const BundleInfo& info) {
  Napi::Object object = Napi::Object::New(env);
  auto number = [&](int64_t value) { return Napi::Number::New(env, static_cast<double>(value)); };
  object.Set("modelId", info.modelId);
  object.Set("randomWeights", info.randomWeights);
  object.Set("seed", info.seed ? number(*info.seed) : env.Null());
  object.Set("checksum", info.checksum);
  object.Set("formatVersion", number(info.formatVersion));
  object.Set("dtype", info.dtype);
  object.Set("resolution", number(info.resolution));
  object.Set("patchSize", number(info.patchSize));
  object.Set("featureSize", number(info.featureSize));
  object.Set("maskSize", number(info.maskSize));
  object.Set("hiddenSize", number(info.hiddenSize));
  object.Set("numQueries", number(info.numQueries));
  object.Set("contextLength", number(info.contextLength));
  object.Set("vocabSize", number(info.vocabSize));
  object.Set("bosId", number(info.bosId));
  object.Set("eosId", number(info.eosId));
  object.Set("padId", number(info.padId));
  object.Set("vocabFile", info.vocabFile);
  object.Set("torchVersion", info.torchVersion);
  object.Set("transformersVersion", info.transformersVersion);
  object.Set("videoAvailable", info.videoAvailable);
  object.Set("conceptAvailable", info.conceptAvailable);
  object.Set("compiled", info.compiled);
  object.Set("visionParts", info.visionParts);
  object.Freeze();
  return object;
}

Napi::Float32Array floatArray(Napi::Env env, const std::vector<float>& values) {
  Napi::Float32Array array = Napi::Float32Array::New(env, values.size());
  std::copy(values.begin(), values.end(), array.Data());
  return array;
}

struct EngineHandoff {
  std::shared_ptr<Engine> engine;
};

}  // namespace

Napi::Function EngineWrap::define(Napi::Env env) {
  return DefineClass(
      env, "Engine",
      {
          StaticMethod<&EngineWrap::load>("load"),
          InstanceMethod<&EngineWrap::encodeImage>("encodeImage"),
          InstanceMethod<&EngineWrap::deriveImage>("deriveImage"),
          InstanceMethod<&EngineWrap::encodeText>("encodeText"),
          InstanceMethod<&EngineWrap::detect>("detect"),
          InstanceMethod<&EngineWrap::segmentPoints>("segmentPoints"),
          InstanceMethod<&EngineWrap::createCancelToken>("createCancelToken"),
          InstanceMethod<&EngineWrap::createTracker>("createTracker"),
          InstanceMethod<&EngineWrap::tasksRun>("tasksRun"),
          InstanceMethod<&EngineWrap::imageBatchCounts>("imageBatchCounts"),
          InstanceMethod<&EngineWrap::injectDeviceOutOfMemory>("injectDeviceOutOfMemory"),
          InstanceMethod<&EngineWrap::lastStageTimes>("lastStageTimes"),
          InstanceMethod<&EngineWrap::close>("close"),
      });
}

EngineWrap::EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(env, "use Engine.load({ bundleDir, device })");
  }
  engine_ = info[0].As<Napi::External<EngineHandoff>>().Data()->engine;
  Napi::Object self = info.This().As<Napi::Object>();
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("info", infoObject(env, engine_->info()), napi_enumerable),
      Napi::PropertyDescriptor::Value("device", Napi::String::New(env, engine_->device()),
                                      napi_enumerable),
  });
}

Napi::Value EngineWrap::load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) badArgument("options must be an object");
    Napi::Object options = info[0].As<Napi::Object>();
    std::string bundleDir = stringMember(options, "bundleDir");
    std::string device = stringMember(options, "device");
    ImageBatching batching;
    Napi::Value batch = options.Get("imageBatch");
    if (!batch.IsUndefined()) {
      if (!batch.IsObject()) badArgument("imageBatch must be an object");
      Napi::Object limits = batch.As<Napi::Object>();
      batching.maxSize = integerArgument(limits.Get("maxSize"), "imageBatch.maxSize");
      batching.waitMs = integerArgument(limits.Get("waitMs"), "imageBatch.waitMs");
    }
    Napi::Value compile = options.Get("compiled");
    const bool compiled = !compile.IsUndefined() && booleanArgument(compile, "compiled");
    auto call = AsyncCall::start(env, {});
    std::shared_ptr<Engine> engine =
        Engine::load(bundleDir, device,
                     AsyncCall::completion<std::shared_ptr<Engine>>(
                         call,
                         [](Napi::Env env, const std::shared_ptr<Engine>& loaded) -> Napi::Value {
                           EngineHandoff handoff{loaded};
                           return AddonData::of(env).engineConstructor.New(
                               {Napi::External<EngineHandoff>::New(env, &handoff)});
                         }),
                     batching, compiled);
    if (engine) AddonData::of(env).track(engine);
    return call->promise();
  });
}

Napi::Value EngineWrap::encodeImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    Napi::Uint8Array rgb = bytesArgument(info[0], "rgb");
    ImageRequest request;
    request.rgb = rgb.Data();
    request.byteLength = rgb.ByteLength();
    request.width = integerArgument(info[1], "width");
    request.height = integerArgument(info[2], "height");
    // The executor reads the pixels in place: keep the buffer (and this engine) referenced.
    CancelToken cancel = CancelTokenWrap::optionalArgument(env, info[3], "cancel");
    ImageMaps maps = mapsArgument(info[4], "maps");
    auto call = AsyncCall::start(env, {info.This(), rgb});
    engine_->encodeImage(request,
                         AsyncCall::completion<std::shared_ptr<ImageEmbedding>>(call, wrapImage),
                         std::move(cancel), maps);
    return call->promise();
  });
}

Napi::Value EngineWrap::deriveImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    std::shared_ptr<const ImageEmbedding> image = imageArgument(env, info[0]);
    if (info[1].IsUndefined()) badArgument("maps must be an array of map names");
    ImageMaps maps = mapsArgument(info[1], "maps");
    CancelToken cancel = CancelTokenWrap::optionalArgument(env, info[2], "cancel");
    auto call = AsyncCall::start(env, {info.This()});
    engine_->deriveImage(std::move(image), maps,
                         AsyncCall::completion<std::shared_ptr<ImageEmbedding>>(call, wrapImage),
                         std::move(cancel));
    return call->promise();
  });
}

Napi::Value EngineWrap::encodeText(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    auto ids = typedArrayArgument<Napi::Int32Array>(info[0], napi_int32_array, "ids", "Int32Array");
    auto mask =
        typedArrayArgument<Napi::Int32Array>(info[1], napi_int32_array, "mask", "Int32Array");
    TextRequest request;
    request.ids = ids.Data();
    request.idsLength = ids.ElementLength();
    request.mask = mask.Data();
    request.maskLength = mask.ElementLength();
    request.batch = integerArgument(info[2], "batch");
    CancelToken cancel = CancelTokenWrap::optionalArgument(env, info[3], "cancel");
    auto call = AsyncCall::start(env, {info.This(), ids, mask});
    using Embeddings = std::vector<std::shared_ptr<TextEmbedding>>;
    engine_->encodeText(request,
                        AsyncCall::completion<Embeddings>(
                            call,
                            [](Napi::Env env, const Embeddings& embeddings) {
                              Napi::Array array = Napi::Array::New(env, embeddings.size());
                              for (size_t i = 0; i < embeddings.size(); ++i) {
                                array.Set(static_cast<uint32_t>(i),
                                          TextEmbeddingWrap::wrap(env, embeddings[i]));
                              }
                              return array;
                            }),
                        std::move(cancel));
    return call->promise();
  });
}

Napi::Value EngineWrap::detect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    std::shared_ptr<const ImageEmbedding> image = imageArgument(env, info[0]);
    auto queries =
        queryList<ConceptQuery>(info[1], [&](const Napi::Object& query, const std::string& where) {
          ConceptQuery parsed;
          parsed.text = TextEmbeddingWrap::unwrap(env, query.Get("text"), where + ".text");
          if (!parsed.text) badArgument(where + ".text must be a TextEmbedding from encodeText");
          parsed.boxes = copyOf(typedArrayArgument<Napi::Float32Array>(
              query.Get("boxes"), napi_float32_array, where + ".boxes", "Float32Array"));
          parsed.boxLabels = copyOf(typedArrayArgument<Napi::Int32Array>(
              query.Get("boxLabels"), napi_int32_array, where + ".boxLabels", "Int32Array"));
          return parsed;
        });
    if (!info[2].IsObject()) badArgument("options must be an object");
    Napi::Value threshold = info[2].As<Napi::Object>().Get("threshold");
    if (!threshold.IsNumber()) badArgument("options.threshold must be a number");
    CancelToken cancel = CancelTokenWrap::optionalArgument(env, info[3], "cancel");

    auto call = AsyncCall::start(env, {info.This()});
    using Results = std::vector<ConceptInstances>;
    engine_->detect(
        std::move(image), std::move(queries), threshold.As<Napi::Number>().DoubleValue(),
        AsyncCall::completion<Results>(
            call,
            [](Napi::Env env, const Results& results) {
              Napi::Array array = Napi::Array::New(env, results.size());
              for (size_t i = 0; i < results.size(); ++i) {
                const ConceptInstances& instances = results[i];
                Napi::Object object = Napi::Object::New(env);
                object.Set("scores", floatArray(env, instances.scores));
                object.Set("boxes", floatArray(env, instances.boxes));
                Napi::Array masks = Napi::Array::New(env, instances.masks.size());
                for (size_t m = 0; m < instances.masks.size(); ++m) {
                  masks.Set(static_cast<uint32_t>(m), Napi::String::New(env, instances.masks[m]));
                }
                object.Set("masks", masks);
                array.Set(static_cast<uint32_t>(i), object);
              }
              return array;
            }),
        std::move(cancel));
    return call->promise();
  });
}

Napi::Value EngineWrap::createCancelToken(const Napi::CallbackInfo& info) {
  return CancelTokenWrap::create(info.Env());
}

Napi::Value EngineWrap::segmentPoints(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    std::shared_ptr<const ImageEmbedding> image = imageArgument(env, info[0]);
    // Values are checked by the core.
    auto queries =
        queryList<PointQuery>(info[1], [&](const Napi::Object& query, const std::string& where) {
          PointQuery parsed;
          parsed.points = copyOf(typedArrayArgument<Napi::Float32Array>(
              query.Get("points"), napi_float32_array, where + ".points", "Float32Array"));
          parsed.pointLabels = copyOf(typedArrayArgument<Napi::Int32Array>(
              query.Get("pointLabels"), napi_int32_array, where + ".pointLabels", "Int32Array"));
          parsed.box = copyOf(typedArrayArgument<Napi::Float32Array>(
              query.Get("box"), napi_float32_array, where + ".box", "Float32Array"));
          return parsed;
        });
    CancelToken cancel = CancelTokenWrap::optionalArgument(env, info[2], "cancel");

    auto call = AsyncCall::start(env, {info.This()});
    using Results = std::vector<PointInstance>;
    engine_->segmentPoints(
        std::move(image), std::move(queries),
        AsyncCall::completion<Results>(
            call,
            [](Napi::Env env, const Results& results) {
              Napi::Array array = Napi::Array::New(env, results.size());
              for (size_t i = 0; i < results.size(); ++i) {
                const PointInstance& instance = results[i];
                Napi::Object object = Napi::Object::New(env);
                object.Set("score", Napi::Number::New(env, instance.score));
                object.Set("box", floatArray(env, std::vector<float>(instance.box.begin(),
                                                                     instance.box.end())));
                object.Set("mask", Napi::String::New(env, instance.mask));
                array.Set(static_cast<uint32_t>(i), object);
              }
              return array;
            }),
        std::move(cancel));
    return call->promise();
  });
}

Napi::Value EngineWrap::createTracker(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (info.Length() < 1 || !info[0].IsObject()) badArgument("options must be an object");
    Napi::Object options = info[0].As<Napi::Object>();
    TrackerOptions parsed;
    parsed.numFrames = integerArgument(options.Get("numFrames"), "numFrames");
    parsed.width = integerArgument(options.Get("width"), "width");
    parsed.height = integerArgument(options.Get("height"), "height");
    parsed.memoryFrames = integerArgument(options.Get("memoryFrames"), "memoryFrames");
    Napi::Value official = options.Get("officialPostprocess");
    if (!official.IsUndefined()) {
      parsed.officialPostprocess = booleanArgument(official, "officialPostprocess");
    }
    Napi::Value maxObjects = options.Get("maxObjects");
    if (!maxObjects.IsUndefined()) parsed.maxObjects = integerArgument(maxObjects, "maxObjects");
    return TrackerWrap::wrap(env, engine_, engine_->createTracker(parsed));
  } catch (const CoreError& error) {
    throw toJsError(env, error);
  }
}

Napi::Value EngineWrap::tasksRun(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(engine_->tasksRun()));
}

Napi::Value EngineWrap::imageBatchCounts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object counts = Napi::Object::New(env);
  for (const auto& [size, calls] : engine_->imageBatchCounts()) {
    counts.Set(std::to_string(size), Napi::Number::New(env, static_cast<double>(calls)));
  }
  return counts;
}

Napi::Value EngineWrap::injectDeviceOutOfMemory(const Napi::CallbackInfo& info) {
  try {
    engine_->injectDeviceOutOfMemory(integerArgument(info[0], "count"));
  } catch (const CoreError& error) {
    throw toJsError(info.Env(), error);
  }
  return info.Env().Undefined();
}

Napi::Value EngineWrap::lastStageTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object times = Napi::Object::New(env);
  for (const auto& [stage, ms] : engine_->lastStageTimes()) times.Set(stage, ms);
  return times;
}

Napi::Value EngineWrap::close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto call = AsyncCall::start(env, {info.This()});
  engine_->close([call] { call->resolve([](Napi::Env env) { return env.Undefined(); }); });
  return call->promise();
}

void EngineWrap::cancelEnvironmentEngines(Napi::Env env) {
  for (const std::weak_ptr<Engine>& weak : AddonData::of(env).engines) {
    if (std::shared_ptr<Engine> engine = weak.lock()) engine->cancelAndJoin();
  }
}

}  // namespace sam3::binding
