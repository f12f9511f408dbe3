#include "cancel_token_wrap.h"

#include "addon_data.h"
#include "arguments.h"

namespace sam3::binding {

Napi::Function CancelTokenWrap::define(Napi::Env env) {
  return DefineClass(env, "CancelToken",
                     {
                         InstanceMethod<&CancelTokenWrap::cancel>("cancel"),
                         InstanceAccessor<&CancelTokenWrap::cancelled>("cancelled"),
                     });
}

Napi::Object CancelTokenWrap::create(Napi::Env env) {
  return AddonData::of(env).cancelTokenConstructor.New({});
}

CancelToken CancelTokenWrap::optionalArgument(Napi::Env env, const Napi::Value& value,
                                              const std::string& what) {
  if (value.IsUndefined()) return nullptr;
  if (!value.IsObject() ||
      !value.As<Napi::Object>().InstanceOf(AddonData::of(env).cancelTokenConstructor.Value())) {
    badArgument(what + " must be a CancelToken");
  }
  return Unwrap(value.As<Napi::Object>())->flag_;
}

CancelTokenWrap::CancelTokenWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<CancelTokenWrap>(info) {}

Napi::Value CancelTokenWrap::cancel(const Napi::CallbackInfo& info) {
  flag_->cancel();
  return info.Env().Undefined();
}

Napi::Value CancelTokenWrap::cancelled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), flag_->isCancelled());
}

}  // namespace sam3::binding
