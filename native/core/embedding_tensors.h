// LibTorch side of ImageEmbedding / TextEmbedding. Included by core .cpp files only.
#pragma once

#include <ATen/core/Tensor.h>

#include "engine.h"

namespace sam3 {

// Undefined tensors for the maps the embedding does not hold (ImageEmbedding::maps()).
struct ImageEmbedding::Tensors {
  at::Tensor fpn[3];         // detector neck: [1, D, 4G, 4G], [1, D, 2G, 2G], [1, D, G, G]
  at::Tensor trackerFpn[3];  // tracker neck: [1, T, 4G, 4G], [1, T, 2G, 2G], [1, T, G, G]
  at::Tensor trunk;          // vision_features [1, G*G, C]
};

struct TextEmbedding::Tensors {
  at::Tensor features;  // [1, L, D], the text encoder's dtype
  at::Tensor mask;      // [1, L] int64, 1 = token
};

}  // namespace sam3
