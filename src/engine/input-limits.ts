/**
 * What the core refuses beyond, known to the server before any work so that it refuses first
 * with an error naming the limit (and states the limits in its schemas and docs, which exist
 * before the addon loads). The core declares the same numbers (native/core/runtime_info.h
 * InputLimits); `checkNativeLimits` compares them when a model loads, so an addon built from
 * other sources fails the load instead of refusing inputs the server let through.
 */
import type { NativeInputLimits } from '../native/types';

/** Longest image side, pixels (core kMaxImageSide). */
export const MAX_IMAGE_SIDE = 16384;
/** Clicks of the one interactive query of an image request (core kMaxClicksPerQuery). */
export const MAX_QUERY_CLICKS = 64;
/** Clicks of one video object on one frame (core kMaxTrackerClicks). */
export const MAX_OBJECT_CLICKS = 64;
/** Exemplar boxes of one video concept on one frame (core kMaxExemplarBoxes). */
export const MAX_EXEMPLAR_BOXES = 32;

const EXPECTED: NativeInputLimits = {
  maxImageSide: MAX_IMAGE_SIDE,
  maxClicksPerQuery: MAX_QUERY_CLICKS,
  maxTrackerClicks: MAX_OBJECT_CLICKS,
  maxExemplarBoxes: MAX_EXEMPLAR_BOXES,
};

/** The limits the server and the addon disagree on, as `name: server vs addon`; [] if none. */
export function nativeLimitMismatches(native: NativeInputLimits): string[] {
  return (Object.keys(EXPECTED) as (keyof NativeInputLimits & string)[])
    .filter((key) => native[key] !== EXPECTED[key])
    .map((key) => `${key}: ${EXPECTED[key]} vs ${native[key]}`);
}
