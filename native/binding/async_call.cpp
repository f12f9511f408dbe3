#include "async_call.h"

namespace sam3::binding {

Napi::Error toJsError(Napi::Env env, const CoreError& error) {
  Napi::Error jsError = Napi::Error::New(env, error.what());
  jsError.Set("code", Napi::String::New(env, errorCodeName(error.code())));
  return jsError;
}

Napi::Promise rejectedPromise(Napi::Env env, const CoreError& error) {
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(toJsError(env, error).Value());
  return deferred.Promise();
}

// Owned by the channel (its context) and freed by its finalizer, on the JS thread: the
// N-API handles in here must never be released on another thread.
struct AsyncCall::JsSide {
  explicit JsSide(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  std::vector<Napi::Reference<Napi::Value>> keepAlive;
  std::shared_ptr<AsyncCall> call;
  bool settled = false;
};

std::shared_ptr<AsyncCall> AsyncCall::start(Napi::Env env,
                                            const std::vector<Napi::Value>& keepAlive) {
  std::shared_ptr<AsyncCall> call(new AsyncCall());
  auto* js = new JsSide(env);
  js->call = call;
  for (const Napi::Value& value : keepAlive) {
    js->keepAlive.push_back(Napi::Reference<Napi::Value>::New(value, 1));
  }
  call->promise_ = js->deferred.Promise();
  try {
    // One pending thread (the executor) and an unbounded queue: calls never block.
    call->channel_ = Channel::New(env, "sam3:native-call", 0, 1, js, &AsyncCall::finalize,
                                  static_cast<void*>(nullptr));
  } catch (...) {
    delete js;
    throw;
  }
  return call;
}

AsyncCall::~AsyncCall() = default;

void AsyncCall::resolve(Settle settle) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (delivered_) return;
    settle_ = std::move(settle);
  }
  deliver();
}

void AsyncCall::reject(const CoreError& error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (delivered_) return;
    error_ = error;
  }
  deliver();
}

void AsyncCall::deliver() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (delivered_) return;
  delivered_ = true;
  // After environment teardown the channel is gone; the outcome is dropped.
  if (!channelOpen_) return;
  channel_.BlockingCall();
  channel_.Release();
}

void AsyncCall::callJs(Napi::Env env, Napi::Function, JsSide* js, void*) {
  // A null env means the environment is being torn down: nothing can be settled.
  if (env == nullptr || js == nullptr) return;
  AsyncCall& call = *js->call;
  js->settled = true;
  Settle settle;
  std::optional<CoreError> error;
  {
    std::lock_guard<std::mutex> lock(call.mutex_);
    settle = std::move(call.settle_);
    error = std::move(call.error_);
  }
  Napi::HandleScope scope(env);
  try {
    if (error) {
      js->deferred.Reject(toJsError(env, *error).Value());
    } else {
      js->deferred.Resolve(settle(env));
    }
  } catch (const Napi::Error& e) {
    js->deferred.Reject(e.Value());
  } catch (const CoreError& e) {
    js->deferred.Reject(toJsError(env, e).Value());
  } catch (const std::exception& e) {
    js->deferred.Reject(toJsError(env, CoreError(ErrorCode::kInternal, e.what())).Value());
  }
  js->keepAlive.clear();
}

void AsyncCall::finalize(Napi::Env, void*, JsSide* js) {
  {
    std::lock_guard<std::mutex> lock(js->call->mutex_);
    js->call->channelOpen_ = false;
  }
  if (!js->settled) {
    // Environment teardown: leave the references to the dying environment.
    for (Napi::Reference<Napi::Value>& reference : js->keepAlive) reference.SuppressDestruct();
  }
  delete js;
}

}  // namespace sam3::binding
