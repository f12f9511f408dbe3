// Per-environment state of the addon (worker threads each get their own).
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "engine.h"

namespace sam3::binding {

struct AddonData {
  Napi::FunctionReference engineConstructor;
  Napi::FunctionReference imageEmbeddingConstructor;
  Napi::FunctionReference textEmbeddingConstructor;
  Napi::FunctionReference trackerConstructor;
  Napi::FunctionReference cancelTokenConstructor;
  // Engines started in this environment, so teardown can stop their threads.
  std::vector<std::weak_ptr<Engine>> engines;

  void track(const std::shared_ptr<Engine>& engine) {
    std::vector<std::weak_ptr<Engine>> live;
    for (const std::weak_ptr<Engine>& weak : engines) {
      if (!weak.expired()) live.push_back(weak);
    }
    live.push_back(engine);
    engines.swap(live);
  }

  static AddonData& of(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }
};

}  // namespace sam3::binding
