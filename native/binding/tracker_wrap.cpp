#include "tracker_wrap.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "addon_data.h"
#include "arguments.h"
#include "async_call.h"

namespace sam3::binding {

namespace {

struct TrackerHandoff {
  std::shared_ptr<Engine> engine;
  std::shared_ptr<TrackerSession> session;
};

// A JS array of numbers, each converted (and checked) by `convert`; `kind` names what it holds.
template <typename Convert>
auto numberArgumentList(const Napi::Value& value, const std::string& name, const char* kind,
                        Convert convert) {
  std::vector<decltype(convert(0.0))> out;
  if (!value.IsArray()) badArgument(name + " must be an array of " + kind);
  Napi::Array array = value.As<Napi::Array>();
  out.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    if (!item.IsNumber()) badArgument(name + " must be an array of " + kind);
    out.push_back(convert(item.As<Napi::Number>().DoubleValue()));
  }
  return out;
}

// Numbers passed on as they are (NaN included): the core checks them.
std::vector<double> numberList(const Napi::Value& value, const std::string& name) {
  return numberArgumentList(value, name, "numbers", [](double v) { return v; });
}

// Box coordinates as the core's floats. Clamping to [-2, 2] changes no decision (the core
// takes [0, 1]) and keeps the conversion defined; NaN stays NaN for the core to refuse.
std::vector<float> coordinateList(const Napi::Value& value, const std::string& name) {
  return numberArgumentList(value, name, "numbers",
                            [](double v) { return static_cast<float>(std::clamp(v, -2.0, 2.0)); });
}

std::vector<int32_t> labelList(const Napi::Value& value, const std::string& name) {
  return numberArgumentList(value, name, "numbers", [&](double label) {
    if (label != 0 && label != 1) badArgument(name + " must be 1 (positive) or 0 (negative)");
    return static_cast<int32_t>(label);
  });
}

std::vector<int32_t> tokenList(const Napi::Value& value, const std::string& name) {
  return numberArgumentList(value, name, "integers", [&](double number) {
    if (!std::isfinite(number) || std::floor(number) != number || number < 0 ||
        number > std::numeric_limits<int32_t>::max()) {
      badArgument(name + " must be an array of non-negative 32-bit integers");
    }
    return static_cast<int32_t>(number);
  });
}

// An object id or frame index: an integer that also fits the core's int64.
int64_t indexMember(const Napi::Object& object, const char* name) {
  return integerArgument(object.Get(name), name);
}

Napi::Object frameObject(Napi::Env env, const TrackerFrame& frame) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("frameIndex", Napi::Number::New(env, static_cast<double>(frame.frameIndex)));
  Napi::Array objects = Napi::Array::New(env, frame.objects.size());
  for (size_t i = 0; i < frame.objects.size(); ++i) {
    const TrackedObject& tracked = frame.objects[i];
    Napi::Object object = Napi::Object::New(env);
    object.Set("objId", Napi::Number::New(env, static_cast<double>(tracked.objId)));
    object.Set("conceptId", Napi::Number::New(env, static_cast<double>(tracked.conceptId)));
    object.Set("present", Napi::Boolean::New(env, tracked.present));
    object.Set("score", Napi::Number::New(env, tracked.score));
    object.Set("trackerScore", Napi::Number::New(env, tracked.trackerScore));
    Napi::Array box = Napi::Array::New(env, 4);
    for (uint32_t k = 0; k < 4; ++k) box.Set(k, Napi::Number::New(env, tracked.box[k]));
    object.Set("box", box);
    object.Set("mask", Napi::String::New(env, tracked.mask));
    objects.Set(static_cast<uint32_t>(i), object);
  }
  result.Set("objects", objects);
  result.Set("objectsDropped", Napi::Number::New(env, static_cast<double>(frame.objectsDropped)));
  return result;
}

Napi::Array frameList(Napi::Env env, const std::vector<TrackerFrame>& frames) {
  Napi::Array list = Napi::Array::New(env, frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    list.Set(static_cast<uint32_t>(i), frameObject(env, frames[i]));
  }
  return list;
}

Napi::Array numberArray(Napi::Env env, const std::vector<int64_t>& values) {
  Napi::Array array = Napi::Array::New(env, values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    array.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(values[i])));
  }
  return array;
}

FrameRequest frameArgument(const Napi::Uint8Array& rgb) {
  FrameRequest frame;
  frame.rgb = rgb.Data();
  frame.byteLength = rgb.ByteLength();
  return frame;
}

}  // namespace

Napi::Function TrackerWrap::define(Napi::Env env) {
  return DefineClass(env, "Tracker",
                     {
                         InstanceMethod<&TrackerWrap::addPrompt>("addPrompt"),
                         InstanceMethod<&TrackerWrap::addConcept>("addConcept"),
                         InstanceMethod<&TrackerWrap::step>("step"),
                         InstanceMethod<&TrackerWrap::removeObject>("removeObject"),
                         InstanceMethod<&TrackerWrap::removeConcept>("removeConcept"),
                         InstanceMethod<&TrackerWrap::objectConcepts>("objectConcepts"),
                         InstanceMethod<&TrackerWrap::reset>("reset"),
                         InstanceMethod<&TrackerWrap::objectIds>("objectIds"),
                         InstanceMethod<&TrackerWrap::promptFrames>("promptFrames"),
                         InstanceMethod<&TrackerWrap::byteSize>("byteSize"),
                         InstanceMethod<&TrackerWrap::release>("release"),
                     });
}

Napi::Object TrackerWrap::wrap(Napi::Env env, std::shared_ptr<Engine> engine,
                               std::shared_ptr<TrackerSession> session) {
  TrackerHandoff handoff{std::move(engine), std::move(session)};
  return AddonData::of(env).trackerConstructor.New(
      {Napi::External<TrackerHandoff>::New(env, &handoff)});
}

TrackerWrap::TrackerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrackerWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "trackers are created by engine.createTracker");
  }
  TrackerHandoff* handoff = info[0].As<Napi::External<TrackerHandoff>>().Data();
  engine_ = handoff->engine;
  session_ = handoff->session;
}

void TrackerWrap::requireOpen() const {
  if (session_->released()) {
    throw CoreError(ErrorCode::kSessionClosed, "the video tracker session was released");
  }
}

Napi::Value TrackerWrap::addPrompt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    requireOpen();
    Napi::Uint8Array rgb = bytesArgument(info[0], "rgb");
    if (!info[1].IsObject()) badArgument("prompt must be an object");
    Napi::Object object = info[1].As<Napi::Object>();
    TrackerPrompt prompt;
    prompt.frameIndex = indexMember(object, "frameIndex");
    prompt.objId = indexMember(object, "objId");
    prompt.points = numberList(object.Get("points"), "points");
    prompt.pointLabels = labelList(object.Get("pointLabels"), "pointLabels");
    Napi::Value box = object.Get("box");
    if (!box.IsNull() && !box.IsUndefined()) prompt.box = numberList(box, "box");
    prompt.clearOld = booleanArgument(object.Get("clearOld"), "clearOld");
    // The executor reads the pixels in place: keep the buffer (and this tracker) referenced.
    auto call = AsyncCall::start(env, {info.This(), rgb});
    engine_->trackerAddPrompt(session_, frameArgument(rgb), std::move(prompt),
                              AsyncCall::completion<TrackerFrame>(call, frameObject));
    return call->promise();
  });
}

Napi::Value TrackerWrap::addConcept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    requireOpen();
    Napi::Uint8Array rgb = bytesArgument(info[0], "rgb");
    if (!info[1].IsObject()) badArgument("prompt must be an object");
    Napi::Object object = info[1].As<Napi::Object>();
    ConceptPrompt prompt;
    prompt.frameIndex = indexMember(object, "frameIndex");
    Napi::Value texts = object.Get("texts");
    if (!texts.IsArray()) badArgument("texts must be an array");
    Napi::Array list = texts.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string where = "texts[" + std::to_string(i) + "]";
      Napi::Value item = list.Get(i);
      if (!item.IsObject()) badArgument(where + " must be an object");
      Napi::Object entry = item.As<Napi::Object>();
      Napi::Value text = entry.Get("text");
      if (!text.IsString()) badArgument(where + ".text must be a string");
      ConceptText parsed;
      parsed.text = text.As<Napi::String>().Utf8Value();
      parsed.tokenIds = tokenList(entry.Get("tokenIds"), where + ".tokenIds");
      parsed.attentionMask = tokenList(entry.Get("attentionMask"), where + ".attentionMask");
      Napi::Value boxes = entry.Get("boxes");
      if (!boxes.IsUndefined()) {
        parsed.boxes = coordinateList(boxes, where + ".boxes");
        parsed.boxLabels = labelList(entry.Get("boxLabels"), where + ".boxLabels");
      }
      prompt.texts.push_back(std::move(parsed));
    }
    auto call = AsyncCall::start(env, {info.This(), rgb});
    engine_->trackerAddConcept(
        session_, frameArgument(rgb), std::move(prompt),
        AsyncCall::completion<ConceptResult>(
            call, [](Napi::Env env, const ConceptResult& result) -> Napi::Value {
              Napi::Object out = Napi::Object::New(env);
              out.Set("conceptIds", numberArray(env, result.conceptIds));
              out.Set("frame", frameObject(env, result.frame));
              return out;
            }));
    return call->promise();
  });
}

Napi::Value TrackerWrap::step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    requireOpen();
    Napi::Uint8Array rgb = bytesArgument(info[0], "rgb");
    if (!info[1].IsObject()) badArgument("request must be an object");
    Napi::Object object = info[1].As<Napi::Object>();
    StepRequest request;
    request.frameIndex = indexMember(object, "frameIndex");
    request.reverse = booleanArgument(object.Get("reverse"), "reverse");
    Napi::Value delay = object.Get("hotstartDelay");
    request.hotstartDelay =
        delay.IsNull() || delay.IsUndefined() ? -1 : integerArgument(delay, "hotstartDelay");
    request.runStart = booleanArgument(object.Get("runStart"), "runStart");
    request.runEnd = booleanArgument(object.Get("runEnd"), "runEnd");
    auto call = AsyncCall::start(env, {info.This(), rgb});
    engine_->trackerStep(session_, frameArgument(rgb), request,
                         AsyncCall::completion<std::vector<TrackerFrame>>(call, frameList));
    return call->promise();
  });
}

Napi::Value TrackerWrap::removeObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    requireOpen();
    int64_t objId = integerArgument(info[0], "objId");
    auto call = AsyncCall::start(env, {info.This()});
    engine_->trackerRemoveObject(
        session_, objId,
        AsyncCall::completion<bool>(call, [](Napi::Env env, bool removed) -> Napi::Value {
          return Napi::Boolean::New(env, removed);
        }));
    return call->promise();
  });
}

Napi::Value TrackerWrap::removeConcept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    requireOpen();
    int64_t conceptId = integerArgument(info[0], "conceptId");
    auto call = AsyncCall::start(env, {info.This()});
    engine_->trackerRemoveConcept(
        session_, conceptId,
        AsyncCall::completion<std::vector<int64_t>>(
            call, [](Napi::Env env, const std::vector<int64_t>& removed) -> Napi::Value {
              return numberArray(env, removed);
            }));
    return call->promise();
  });
}

Napi::Value TrackerWrap::reset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promiseOrRejection(env, [&]() -> Napi::Value {
    requireOpen();
    auto call = AsyncCall::start(env, {info.This()});
    engine_->trackerReset(
        session_,
        AsyncCall::completion<int64_t>(call, [](Napi::Env env, int64_t cleared) -> Napi::Value {
          return Napi::Number::New(env, static_cast<double>(cleared));
        }));
    return call->promise();
  });
}

Napi::Value TrackerWrap::objectIds(const Napi::CallbackInfo& info) {
  return numberArray(info.Env(), session_->objectIds());
}

Napi::Value TrackerWrap::objectConcepts(const Napi::CallbackInfo& info) {
  return numberArray(info.Env(), session_->objectConcepts());
}

Napi::Value TrackerWrap::promptFrames(const Napi::CallbackInfo& info) {
  return numberArray(info.Env(), session_->promptFrames());
}

Napi::Value TrackerWrap::byteSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(session_->byteSize()));
}

Napi::Value TrackerWrap::release(const Napi::CallbackInfo& info) {
  session_->release();
  return info.Env().Undefined();
}

}  // namespace sam3::binding
