// The vision pass: the maps a caller asks for, from whichever vision modules the bundle has.
// Format 4 runs the trunk and only the necks asked for; formats 1 to 3 have one vision
// encoder, which computes all six maps (and keeps no trunk output). Internal to native/core.
#pragma once

#include <array>

#include "bundle.h"
#include "engine.h"

namespace sam3 {

struct VisionMaps {
  at::Tensor trunk;                    // vision_features [B, G*G, C]: asked for, format 4 only
  std::array<at::Tensor, 3> detector;  // fpn_0..2
  std::array<at::Tensor, 3> tracker;   // tracker_fpn_0..2
};

// pixel_values [B, 3, R, R] through the vision modules. Outputs are batch-B views of the
// modules' results.
VisionMaps encodeVision(Bundle& bundle, const at::Tensor& pixels, const ImageMaps& maps);

// The necks `maps` asks for, from the trunk's vision_features (format 4 only: INTERNAL
// otherwise). `maps.trunk` keeps `trunk` in the result.
VisionMaps visionNecks(Bundle& bundle, const at::Tensor& trunk, const ImageMaps& maps);

}  // namespace sam3
