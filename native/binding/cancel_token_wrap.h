// The JS CancelToken objects (NativeCancelToken in src/native/types.ts), made by
// engine.createCancelToken(): `cancel()`, `cancelled`. Passed as the last argument of an image
// call, it lets the caller drop a call still queued on the executor (it then rejects with
// CANCELLED, unrun).
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "engine.h"

namespace sam3::binding {

class CancelTokenWrap : public Napi::ObjectWrap<CancelTokenWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object create(Napi::Env env);
  // The flag behind an optional argument: nullptr for undefined; BAD_INPUT naming `what` for
  // anything but a CancelToken.
  static CancelToken optionalArgument(Napi::Env env, const Napi::Value& value,
                                      const std::string& what);

  explicit CancelTokenWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value cancel(const Napi::CallbackInfo& info);
  Napi::Value cancelled(const Napi::CallbackInfo& info);

  std::shared_ptr<CancelFlag> flag_ = std::make_shared<CancelFlag>();
};

}  // namespace sam3::binding
