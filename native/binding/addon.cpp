// Entry point of sam3.node (NativeAddon in src/native/types.ts).
#include <napi.h>

#include <exception>
#include <optional>

#include "addon_data.h"
#include "async_call.h"
#include "cancel_token_wrap.h"
#include "embedding_wrap.h"
#include "engine_wrap.h"
#include "rle.h"
#include "runtime_info.h"
#include "tracker_wrap.h"

namespace sam3::binding {

namespace {

// encodeRle(mask: Uint8Array, height, width): COCO RLE counts of a row-major binary mask.
// Synchronous: it is small work, used by tests and tools.
Napi::Value encodeRle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto fail = [&](const std::string& message) -> Napi::Value {
    Napi::Error error = toJsError(env, CoreError(ErrorCode::kBadInput, message));
    throw error;
  };
  if (!info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    return fail("mask must be a Uint8Array");
  }
  if (!info[1].IsNumber() || !info[2].IsNumber()) return fail("height and width must be numbers");
  double height = info[1].As<Napi::Number>().DoubleValue();
  double width = info[2].As<Napi::Number>().DoubleValue();
  // Range first: casting NaN or infinities to an integer is undefined.
  auto isSize = [](double value) {
    return value >= 0 && value <= 1e9 && value == static_cast<double>(static_cast<int64_t>(value));
  };
  if (!isSize(height) || !isSize(width)) return fail("height and width must be integers >= 0");
  Napi::Uint8Array mask = info[0].As<Napi::Uint8Array>();
  size_t h = static_cast<size_t>(height), w = static_cast<size_t>(width);
  if (mask.ElementLength() != h * w) return fail("mask must hold height * width bytes");
  return Napi::String::New(env, encodeRleRowMajor(mask.Data(), h, w));
}

// shutdown(): stops this environment's engines before the process exits. The loader calls it
// from process.on('exit'): exit handlers would otherwise destroy LibTorch's (and oneDNN's)
// statics while an executor thread is still inside a model call.
Napi::Value shutdown(const Napi::CallbackInfo& info) {
  EngineWrap::cancelEnvironmentEngines(info.Env());
  return info.Env().Undefined();
}

Napi::Value liveTrackerBytesValue(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(liveTrackerBytes()));
}

Napi::Value runtimeInfoValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RuntimeInfo runtime = runtimeInfo();
  Napi::Object object = Napi::Object::New(env);
  object.Set("torchVersion", runtime.torchVersion);
  object.Set("cudaAvailable", runtime.cudaAvailable);
  object.Set("cudaDeviceCount", runtime.cudaDeviceCount);
  object.Set("liveEmbeddingBytes", static_cast<double>(runtime.liveEmbeddingBytes));
  Napi::Object limits = Napi::Object::New(env);
  limits.Set("maxImageSide", static_cast<double>(runtime.limits.maxImageSide));
  limits.Set("maxClicksPerQuery", static_cast<double>(runtime.limits.maxClicksPerQuery));
  limits.Set("maxTrackerClicks", static_cast<double>(runtime.limits.maxTrackerClicks));
  limits.Set("maxExemplarBoxes", static_cast<double>(runtime.limits.maxExemplarBoxes));
  object.Set("limits", limits);
  return object;
}

Napi::Value deviceMemoryValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    Napi::TypeError::New(env, "device must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::optional<DeviceMemory> memory;
  try {
    memory = deviceMemory(info[0].As<Napi::String>().Utf8Value());
  } catch (const std::exception&) {
    // A device string LibTorch cannot parse: no figures for it.
    memory = std::nullopt;
  }
  if (!memory) return env.Null();
  Napi::Object object = Napi::Object::New(env);
  object.Set("allocatedBytes", static_cast<double>(memory->allocatedBytes));
  object.Set("reservedBytes", static_cast<double>(memory->reservedBytes));
  object.Set("peakAllocatedBytes", static_cast<double>(memory->peakAllocatedBytes));
  return object;
}

}  // namespace

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);
  Napi::Function engine = EngineWrap::define(env);
  data->engineConstructor = Napi::Persistent(engine);
  data->imageEmbeddingConstructor = Napi::Persistent(ImageEmbeddingWrap::define(env));
  data->textEmbeddingConstructor = Napi::Persistent(TextEmbeddingWrap::define(env));
  data->trackerConstructor = Napi::Persistent(TrackerWrap::define(env));
  data->cancelTokenConstructor = Napi::Persistent(CancelTokenWrap::define(env));

  // Stop executor threads before a worker's environment goes away under a running model call.
  env.AddCleanupHook([env] { EngineWrap::cancelEnvironmentEngines(env); });

  exports.Set("Engine", engine);
  exports.Set("encodeRle", Napi::Function::New<encodeRle>(env, "encodeRle"));
  exports.Set("liveTrackerBytes",
              Napi::Function::New<liveTrackerBytesValue>(env, "liveTrackerBytes"));
  exports.Set("runtimeInfo", Napi::Function::New<runtimeInfoValue>(env, "runtimeInfo"));
  exports.Set("deviceMemory", Napi::Function::New<deviceMemoryValue>(env, "deviceMemory"));
  exports.Set("shutdown", Napi::Function::New<shutdown>(env, "shutdown"));
  return exports;
}

}  // namespace sam3::binding

static Napi::Object initSam3(Napi::Env env, Napi::Object exports) {
  return sam3::binding::init(env, exports);
}

NODE_API_MODULE(sam3, initSam3)
