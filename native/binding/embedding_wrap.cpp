#include "embedding_wrap.h"

#include "addon_data.h"
#include "errors.h"

namespace sam3::binding {

namespace {

// Constructors take the embedding through an External only the addon can create, so JS
// cannot construct empty embeddings.
template <typename T>
struct Handoff {
  std::shared_ptr<const T> embedding;
};

template <typename T>
std::shared_ptr<const T> takeHandoff(const Napi::CallbackInfo& info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "embeddings are created by the engine");
  }
  return info[0].As<Napi::External<Handoff<T>>>().Data()->embedding;
}

void defineReadOnly(Napi::Object object, const char* name, Napi::Value value) {
  object.DefineProperty(Napi::PropertyDescriptor::Value(name, value, napi_enumerable));
}

// The embedding a wrap holds, refusing a released one (the wrap stays a valid JS object).
template <typename T>
std::shared_ptr<const T> heldEmbedding(const std::shared_ptr<const T>& held,
                                       const std::string& what) {
  if (!held) throw CoreError(ErrorCode::kBadInput, what + " embedding was released");
  return held;
}

// Drops a wrap's reference and the external memory it reported to V8. Tensors are freed now
// unless a queued call still holds them (then when that call ends).
template <typename T>
void releaseEmbedding(Napi::Env env, std::shared_ptr<const T>& held) {
  if (!held) return;
  Napi::MemoryManagement::AdjustExternalMemory(env, -held->byteSize());
  held.reset();
}

}  // namespace

Napi::Function ImageEmbeddingWrap::define(Napi::Env env) {
  return DefineClass(env, "ImageEmbedding",
                     {InstanceMethod<&ImageEmbeddingWrap::release>("release")});
}

Napi::Object ImageEmbeddingWrap::wrap(Napi::Env env,
                                      std::shared_ptr<const ImageEmbedding> embedding) {
  Handoff<ImageEmbedding> handoff{std::move(embedding)};
  return AddonData::of(env).imageEmbeddingConstructor.New(
      {Napi::External<Handoff<ImageEmbedding>>::New(env, &handoff)});
}

std::shared_ptr<const ImageEmbedding> ImageEmbeddingWrap::unwrap(Napi::Env env,
                                                                 const Napi::Value& value,
                                                                 const std::string& what) {
  if (!value.IsObject() ||
      !value.As<Napi::Object>().InstanceOf(AddonData::of(env).imageEmbeddingConstructor.Value())) {
    return nullptr;
  }
  return heldEmbedding(Unwrap(value.As<Napi::Object>())->embedding_, what);
}

Napi::Value ImageEmbeddingWrap::release(const Napi::CallbackInfo& info) {
  releaseEmbedding(env_, embedding_);
  return info.Env().Undefined();
}

ImageEmbeddingWrap::ImageEmbeddingWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ImageEmbeddingWrap>(info), env_(info.Env()) {
  embedding_ = takeHandoff<ImageEmbedding>(info);
  Napi::Object self = info.This().As<Napi::Object>();
  defineReadOnly(self, "width", Napi::Number::New(env_, static_cast<double>(embedding_->width())));
  defineReadOnly(self, "height",
                 Napi::Number::New(env_, static_cast<double>(embedding_->height())));
  defineReadOnly(self, "byteSize",
                 Napi::Number::New(env_, static_cast<double>(embedding_->byteSize())));
  // The maps held, by name: a frozen array such as ["detector", "trunk"].
  const ImageMaps& maps = embedding_->maps();
  Napi::Array names = Napi::Array::New(env_);
  for (const auto& [held, name] :
       {std::pair{maps.detector, "detector"}, std::pair{maps.tracker, "tracker"},
        std::pair{maps.trunk, "trunk"}}) {
    if (held) names.Set(names.Length(), Napi::String::New(env_, name));
  }
  env_.Global().Get("Object").As<Napi::Object>().Get("freeze").As<Napi::Function>().Call({names});
  defineReadOnly(self, "maps", names);
  // Tells V8's collector how much memory this small object really holds.
  Napi::MemoryManagement::AdjustExternalMemory(env_, embedding_->byteSize());
}

ImageEmbeddingWrap::~ImageEmbeddingWrap() {
  if (embedding_) Napi::MemoryManagement::AdjustExternalMemory(env_, -embedding_->byteSize());
}

Napi::Function TextEmbeddingWrap::define(Napi::Env env) {
  return DefineClass(env, "TextEmbedding",
                     {InstanceMethod<&TextEmbeddingWrap::release>("release")});
}

Napi::Object TextEmbeddingWrap::wrap(Napi::Env env,
                                     std::shared_ptr<const TextEmbedding> embedding) {
  Handoff<TextEmbedding> handoff{std::move(embedding)};
  return AddonData::of(env).textEmbeddingConstructor.New(
      {Napi::External<Handoff<TextEmbedding>>::New(env, &handoff)});
}

std::shared_ptr<const TextEmbedding> TextEmbeddingWrap::unwrap(Napi::Env env,
                                                               const Napi::Value& value,
                                                               const std::string& what) {
  if (!value.IsObject() ||
      !value.As<Napi::Object>().InstanceOf(AddonData::of(env).textEmbeddingConstructor.Value())) {
    return nullptr;
  }
  return heldEmbedding(Unwrap(value.As<Napi::Object>())->embedding_, what);
}

Napi::Value TextEmbeddingWrap::release(const Napi::CallbackInfo& info) {
  releaseEmbedding(env_, embedding_);
  return info.Env().Undefined();
}

TextEmbeddingWrap::TextEmbeddingWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<TextEmbeddingWrap>(info), env_(info.Env()) {
  embedding_ = takeHandoff<TextEmbedding>(info);
  defineReadOnly(info.This().As<Napi::Object>(), "byteSize",
                 Napi::Number::New(env_, static_cast<double>(embedding_->byteSize())));
  Napi::MemoryManagement::AdjustExternalMemory(env_, embedding_->byteSize());
}

TextEmbeddingWrap::~TextEmbeddingWrap() {
  if (embedding_) Napi::MemoryManagement::AdjustExternalMemory(env_, -embedding_->byteSize());
}

}  // namespace sam3::binding
