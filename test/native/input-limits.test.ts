/** The server's copy of the core's input limits equals the addon's (src/engine/input-limits.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MAX_EXEMPLAR_BOXES,
  MAX_IMAGE_SIDE,
  MAX_OBJECT_CLICKS,
  MAX_QUERY_CLICKS,
  nativeLimitMismatches,
} from '../../src/engine/input-limits';
import { loadAddon } from '../../src/native/addon';

describe('input limits', () => {
  it('equal the addon limits', () => {
    const { limits } = loadAddon().runtimeInfo();
    assert.deepEqual(limits, {
      maxImageSide: MAX_IMAGE_SIDE,
      maxClicksPerQuery: MAX_QUERY_CLICKS,
      maxTrackerClicks: MAX_OBJECT_CLICKS,
      maxExemplarBoxes: MAX_EXEMPLAR_BOXES,
    });
    assert.deepEqual(nativeLimitMismatches(limits), []);
  });

  it('name each limit an addon built from other sources disagrees on', () => {
    const { limits } = loadAddon().runtimeInfo();
    assert.deepEqual(nativeLimitMismatches({ ...limits, maxImageSide: 8192 }), [
      `maxImageSide: ${MAX_IMAGE_SIDE} vs 8192`,
    ]);
  });
});
