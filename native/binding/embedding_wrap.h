// JS objects that own image/text embeddings (device memory). JS (the feature cache) keeps them
// alive; garbage collection frees the tensors.
#pragma once

#include <napi.h>

#include <memory>

#include "engine.h"

namespace sam3::binding {

class ImageEmbeddingWrap : public Napi::ObjectWrap<ImageEmbeddingWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<const ImageEmbedding> embedding);
  // The embedding behind a JS value, or nullptr if it is not an ImageEmbedding.
  static std::shared_ptr<const ImageEmbedding> unwrap(Napi::Env env, const Napi::Value& value);

  explicit ImageEmbeddingWrap(const Napi::CallbackInfo& info);
  ~ImageEmbeddingWrap() override;

 private:
  std::shared_ptr<const ImageEmbedding> embedding_;
  Napi::Env env_;
};

class TextEmbeddingWrap : public Napi::ObjectWrap<TextEmbeddingWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<const TextEmbedding> embedding);
  static std::shared_ptr<const TextEmbedding> unwrap(Napi::Env env, const Napi::Value& value);

  explicit TextEmbeddingWrap(const Napi::CallbackInfo& info);
  ~TextEmbeddingWrap() override;

 private:
  std::shared_ptr<const TextEmbedding> embedding_;
  Napi::Env env_;
};

}  // namespace sam3::binding
