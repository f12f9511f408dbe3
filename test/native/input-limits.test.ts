/**
 * Facts of the addon itself: its input limits equal the server's copy
 * (src/engine/input-limits.ts), and the caching allocator's figures are there only for CUDA.
 */
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

describe('addon facts', () => {
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

  it('reports allocator figures for CUDA devices only', () => {
    const addon = loadAddon();
    assert.equal(addon.deviceMemory('cpu'), null);
    assert.equal(addon.deviceMemory('cuda:not-a-number'), null);
    const { cudaAvailable, cudaDeviceCount } = addon.runtimeInfo();
    assert.equal(addon.deviceMemory(`cuda:${cudaDeviceCount}`), null, 'an absent device');
    const first = addon.deviceMemory('cuda:0');
    if (!cudaAvailable) {
      assert.equal(first, null);
      return;
    }
    assert.ok(first !== null);
    assert.ok(first.reservedBytes >= first.allocatedBytes && first.allocatedBytes >= 0);
    assert.ok(first.peakAllocatedBytes >= first.allocatedBytes);
  });
});
