// JS objects that own image/text embeddings (device memory). JS (the feature cache) keeps them
// alive; release() or garbage collection lets go of the tensors (freed once no queued call
// holds them either).
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "engine.h"

namespace sam3::binding {

class ImageEmbeddingWrap : public Napi::ObjectWrap<ImageEmbeddingWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<const ImageEmbedding> embedding);
  // The embedding behind a JS value, or nullptr if it is not an ImageEmbedding. Throws
  // CoreError(BAD_INPUT) "<what> embedding was released" for a released one.
  static std::shared_ptr<const ImageEmbedding> unwrap(Napi::Env env, const Napi::Value& value,
                                                      const std::string& what);

  explicit ImageEmbeddingWrap(const Napi::CallbackInfo& info);
  ~ImageEmbeddingWrap() override;

 private:
  // release(): drops this object's reference now (idempotent).
  Napi::Value release(const Napi::CallbackInfo& info);

  std::shared_ptr<const ImageEmbedding> embedding_;
  Napi::Env env_;
};

class TextEmbeddingWrap : public Napi::ObjectWrap<TextEmbeddingWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<const TextEmbedding> embedding);
  static std::shared_ptr<const TextEmbedding> unwrap(Napi::Env env, const Napi::Value& value,
                                                     const std::string& what);

  explicit TextEmbeddingWrap(const Napi::CallbackInfo& info);
  ~TextEmbeddingWrap() override;

 private:
  Napi::Value release(const Napi::CallbackInfo& info);

  std::shared_ptr<const TextEmbedding> embedding_;
  Napi::Env env_;
};

}  // namespace sam3::binding
