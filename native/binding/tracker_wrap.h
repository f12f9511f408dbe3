// The JS Tracker class (NativeTracker in src/native/types.ts): one video tracking session of
// an engine. Promise-returning calls queue one task each on the engine's executor; release()
// frees the session's tensors now (or when its running task ends).
#pragma once

#include <napi.h>

#include <memory>

#include "engine.h"

namespace sam3::binding {

class TrackerWrap : public Napi::ObjectWrap<TrackerWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<Engine> engine,
                           std::shared_ptr<TrackerSession> session);

  explicit TrackerWrap(const Napi::CallbackInfo& info);

 private:
  // addPrompt(rgb, {frameIndex, objId, points, pointLabels, box, clearOld})
  Napi::Value addPrompt(const Napi::CallbackInfo& info);
  // addConcept(rgb, {frameIndex, texts: [{text, tokenIds, attentionMask}]})
  Napi::Value addConcept(const Napi::CallbackInfo& info);
  // step(rgb, {frameIndex, reverse, hotstartDelay, runStart, runEnd}) -> frames emitted
  Napi::Value step(const Napi::CallbackInfo& info);
  Napi::Value removeObject(const Napi::CallbackInfo& info);
  Napi::Value removeConcept(const Napi::CallbackInfo& info);
  Napi::Value objectConcepts(const Napi::CallbackInfo& info);
  Napi::Value reset(const Napi::CallbackInfo& info);
  Napi::Value objectIds(const Napi::CallbackInfo& info);
  Napi::Value promptFrames(const Napi::CallbackInfo& info);
  Napi::Value byteSize(const Napi::CallbackInfo& info);
  Napi::Value release(const Napi::CallbackInfo& info);

  // SESSION_CLOSED once released (checked before queuing; queued tasks check again).
  void requireOpen() const;

  std::shared_ptr<Engine> engine_;
  std::shared_ptr<TrackerSession> session_;
};

}  // namespace sam3::binding
