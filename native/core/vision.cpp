#include "vision.h"

namespace sam3 {

VisionMaps encodeVision(Bundle& bundle, const at::Tensor& pixels, const ImageMaps& maps) {
  if (!bundle.hasVisionParts()) {
    NamedTensors outputs = bundle.call(ModuleKind::kVisionEncoder, {{"pixel_values", pixels}}, {});
    VisionMaps result;
    for (size_t level = 0; level < 3; ++level) {
      result.detector[level] = outputs.at(kVisionEncoderOutputs[level]);
      result.tracker[level] = outputs.at(kVisionEncoderOutputs[3 + level]);
    }
    return result;
  }
  NamedTensors trunk = bundle.call(ModuleKind::kVisionTrunk, {{"pixel_values", pixels}}, {});
  return visionNecks(bundle, trunk.at(kVisionFeatures), maps);
}

VisionMaps visionNecks(Bundle& bundle, const at::Tensor& trunk, const ImageMaps& maps) {
  VisionMaps result;
  if (maps.trunk) result.trunk = trunk;
  const std::pair<ModuleKind, std::array<at::Tensor, 3>*> necks[] = {
      {ModuleKind::kDetectorNeck, maps.detector ? &result.detector : nullptr},
      {ModuleKind::kTrackerNeck, maps.tracker ? &result.tracker : nullptr}};
  size_t first = 0;  // index of the neck's first output in kVisionEncoderOutputs
  for (const auto& [kind, levels] : necks) {
    if (levels != nullptr) {
      NamedTensors outputs = bundle.call(kind, {{kVisionFeatures, trunk}}, {});
      for (size_t level = 0; level < 3; ++level) {
        (*levels)[level] = outputs.at(kVisionEncoderOutputs[first + level]);
      }
    }
    first += 3;
  }
  return result;
}

}  // namespace sam3
