#include "errors.h"

#include <c10/util/Exception.h>

#include <new>
#include <string>

namespace sam3 {

const char* errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kModelLoad:
      return "MODEL_LOAD";
    case ErrorCode::kBadInput:
      return "BAD_INPUT";
    case ErrorCode::kDeviceOom:
      return "DEVICE_OOM";
    case ErrorCode::kDeviceUnavailable:
      return "DEVICE_UNAVAILABLE";
    case ErrorCode::kEngineClosed:
      return "ENGINE_CLOSED";
    case ErrorCode::kSessionClosed:
      return "SESSION_CLOSED";
    case ErrorCode::kCancelled:
      return "CANCELLED";
    case ErrorCode::kInternal:
      return "INTERNAL";
  }
  return "INTERNAL";
}

namespace {

// A TorchScript runtime error reads "The following operation failed in the TorchScript
// interpreter.\nTraceback of TorchScript ...\n<frames naming the exporter's source files>\n
// RuntimeError: <the actual message>". Keep the actual message only.
std::string withoutTorchScriptTraceback(const std::string& message) {
  if (message.find("Traceback of TorchScript") == std::string::npos) return message;
  const std::string marker = "Error: ";
  size_t lineStart = message.size();
  while (lineStart > 0) {
    size_t previous = message.rfind('\n', lineStart - 1);
    size_t begin = previous == std::string::npos ? 0 : previous + 1;
    size_t found = message.find(marker, begin);
    size_t lineEnd = message.find('\n', begin);
    if (found != std::string::npos && (lineEnd == std::string::npos || found < lineEnd)) {
      return message.substr(found + marker.size());
    }
    if (previous == std::string::npos) break;
    lineStart = previous;
  }
  return message.substr(0, message.find('\n'));
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

CoreError toCoreError(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const CoreError& e) {
    return e;
  } catch (const c10::OutOfMemoryError& e) {
    return CoreError(ErrorCode::kDeviceOom,
                     "device out of memory: " + trimmed(e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    std::string message = trimmed(withoutTorchScriptTraceback(e.what_without_backtrace()));
    // The TorchScript interpreter may re-wrap an allocator failure in a plain c10::Error.
    if (message.find("out of memory") != std::string::npos) {
      return CoreError(ErrorCode::kDeviceOom, "device out of memory: " + message);
    }
    return CoreError(ErrorCode::kInternal, message);
  } catch (const std::bad_alloc&) {
    return CoreError(ErrorCode::kDeviceOom, "host out of memory");
  } catch (const std::exception& e) {
    return CoreError(ErrorCode::kInternal, trimmed(withoutTorchScriptTraceback(e.what())));
  } catch (...) {
    return CoreError(ErrorCode::kInternal, "unknown native error");
  }
}

}  // namespace sam3
