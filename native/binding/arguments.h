// Argument unpacking shared by the binding's classes: every refusal is a CoreError(BAD_INPUT)
// naming the argument, which the callers turn into a rejected promise or a thrown JS error.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "async_call.h"
#include "errors.h"

namespace sam3::binding {

[[noreturn]] inline void badArgument(const std::string& message) {
  throw CoreError(ErrorCode::kBadInput, message);
}

// A JS number that is an integer in [0, 2^53).
inline int64_t integerArgument(const Napi::Value& value, const std::string& name) {
  if (!value.IsNumber()) badArgument(name + " must be a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::floor(number) != number || number < 0 ||
      number >= 9007199254740992.0) {
    badArgument(name + " must be a non-negative integer");
  }
  return static_cast<int64_t>(number);
}

inline bool booleanArgument(const Napi::Value& value, const std::string& name) {
  if (!value.IsBoolean()) badArgument(name + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

inline Napi::Uint8Array bytesArgument(const Napi::Value& value, const std::string& name) {
  if (value.IsTypedArray()) {
    napi_typedarray_type type = value.As<Napi::TypedArray>().TypedArrayType();
    if (type == napi_uint8_array || type == napi_uint8_clamped_array) {
      return value.As<Napi::Uint8Array>();
    }
  }
  badArgument(name + " must be a Buffer or Uint8Array");
}

// Runs `body`, turning a CoreError thrown while unpacking arguments into a rejected promise.
template <typename Body>
Napi::Value promiseOrRejection(Napi::Env env, Body body) {
  try {
    return body();
  } catch (const CoreError& error) {
    return rejectedPromise(env, error);
  }
}

}  // namespace sam3::binding
