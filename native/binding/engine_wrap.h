// The JS Engine class (NativeEngine in src/native/types.ts): unpacks arguments, queues work on
// the core engine's executor, and settles promises through AsyncCall.
#pragma once

#include <napi.h>

#include <memory>

#include "engine.h"

namespace sam3::binding {

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  // Engine.load({bundleDir, device, imageBatch?: {maxSize, waitMs}}) -> Promise<Engine>
  static Napi::Value load(const Napi::CallbackInfo& info);
  // Stops every engine started in `env`: queued calls fail with ENGINE_CLOSED, the running one
  // finishes. For process exit and environment (worker) teardown.
  static void cancelEnvironmentEngines(Napi::Env env);

  explicit EngineWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value encodeImage(const Napi::CallbackInfo& info);
  Napi::Value deriveImage(const Napi::CallbackInfo& info);
  Napi::Value encodeText(const Napi::CallbackInfo& info);
  Napi::Value detect(const Napi::CallbackInfo& info);
  Napi::Value segmentPoints(const Napi::CallbackInfo& info);
  Napi::Value createCancelToken(const Napi::CallbackInfo& info);
  Napi::Value createTracker(const Napi::CallbackInfo& info);
  Napi::Value tasksRun(const Napi::CallbackInfo& info);
  Napi::Value imageBatchCounts(const Napi::CallbackInfo& info);
  Napi::Value injectDeviceOutOfMemory(const Napi::CallbackInfo& info);
  Napi::Value lastStageTimes(const Napi::CallbackInfo& info);
  Napi::Value close(const Napi::CallbackInfo& info);

  std::shared_ptr<Engine> engine_;
};

}  // namespace sam3::binding
