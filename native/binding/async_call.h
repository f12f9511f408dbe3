// Promises settled on the JS thread by work that completes on a device executor thread.
// N-API calls here only enqueue; nothing blocks the event loop or the libuv pool.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "engine.h"
#include "errors.h"

namespace sam3::binding {

// A JS Error whose `code` is the core error's code name ("BAD_INPUT", ...).
Napi::Error toJsError(Napi::Env env, const CoreError& error);

// A promise already rejected with `error` (for argument errors found before queuing).
Napi::Promise rejectedPromise(Napi::Env env, const CoreError& error);

class AsyncCall {
 public:
  // Runs on the JS thread and returns the value to resolve with; it may throw (Napi::Error,
  // CoreError) to reject instead.
  using Settle = std::function<Napi::Value(Napi::Env)>;

  // JS thread. `keepAlive`: JS values the native work reads in place (input buffers, the
  // engine object); they stay referenced until the promise settles.
  static std::shared_ptr<AsyncCall> start(Napi::Env env, const std::vector<Napi::Value>& keepAlive);
  ~AsyncCall();

  // JS thread, right after start.
  Napi::Promise promise() const { return promise_; }

  // Any thread, once (later calls are ignored): hands the outcome to the JS thread.
  void resolve(Settle settle);
  void reject(const CoreError& error);

  // A core completion callback: rejects on error, else resolves with toJs(env, value) on the
  // JS thread. `toJs` must copy only C++ data (it runs later, on the JS thread).
  template <typename T, typename ToJs>
  static Done<T> completion(std::shared_ptr<AsyncCall> call, ToJs toJs) {
    return [call = std::move(call), toJs](Outcome<T> outcome) {
      if (!outcome.ok()) {
        call->reject(*outcome.error);
        return;
      }
      call->resolve([value = std::move(outcome.value), toJs](Napi::Env env) -> Napi::Value {
        return toJs(env, value);
      });
    };
  }

  struct JsSide;

 private:
  AsyncCall() = default;
  void deliver();
  static void callJs(Napi::Env env, Napi::Function unused, JsSide* js, void* data);
  static void finalize(Napi::Env env, void* data, JsSide* js);

  using Channel = Napi::TypedThreadSafeFunction<JsSide, void, &AsyncCall::callJs>;

  std::mutex mutex_;
  bool channelOpen_ = true;  // false once Node finalized the channel (normal end or teardown)
  bool delivered_ = false;
  Channel channel_;
  Settle settle_;
  std::optional<CoreError> error_;
  Napi::Promise promise_;
};

}  // namespace sam3::binding
