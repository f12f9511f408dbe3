// Error type of the native core. Every failure that leaves native/core is a CoreError whose
// code the binding copies into the JS error's `code` (NativeErrorCode in src/native/types.ts).
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace sam3 {

enum class ErrorCode {
  kModelLoad,          // bundle missing, manifest invalid, module signature mismatch
  kBadInput,           // arguments the core refuses
  kDeviceOom,          // the device (or host) ran out of memory; the engine stays usable
  kDeviceUnavailable,  // e.g. cuda:3 on a machine with one GPU
  kEngineClosed,       // the engine was closed before the call ran
  kSessionClosed,      // the video tracker session was released before the call ran
  kCancelled,          // the caller cancelled the call before it ran (CancelToken)
  kInternal,           // anything else: a bug in the bundle or in this code
};

// The wire name of a code, e.g. "MODEL_LOAD".
const char* errorCodeName(ErrorCode code);

class CoreError : public std::runtime_error {
 public:
  CoreError(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}

  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// Classifies any exception: a CoreError stays as it is; c10::OutOfMemoryError and
// std::bad_alloc become DEVICE_OOM; other LibTorch errors become INTERNAL with the message
// stripped of C++ backtraces and TorchScript tracebacks (which name host paths).
CoreError toCoreError(const std::exception_ptr& error);

}  // namespace sam3
