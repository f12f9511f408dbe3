/**
 * The demo page (/demo) in a real browser: headless Chromium (Debian's `chromium`, driven by
 * playwright-core) against the real server on the tiny random-weight bundle, with an API key
 * required (so the key field, and the key on the WebSocket upgrade, are exercised). Image by
 * text and by a click: the mask layer has paint exactly where the response's RLE says. Video:
 * upload, click, propagate over the WebSocket: frames arrive in order, are drawn as they come,
 * and scrubbing shows each frame's masks. Screenshots of both flows are written to
 * artifacts/demo/ (SAM3_SCREENSHOT_DIR) for a person to look at.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { decodeRle, type CocoRle } from '../../src/engine/coco-rle';
import { DEMO_CONTENT_SECURITY_POLICY } from '../../src/server/routes/demo';
import { syntheticPng } from '../helpers/images';
import { repoPath } from '../helpers/repo';
import { exportTinyBundle, startTestServer, type TestServer } from '../helpers/server';
import { makeTempDir, movingShapesFrames, removeDir, runFfmpeg } from '../helpers/videos';

const API_KEY = 'demo-key/+=';
const CHROMIUM_CANDIDATES = [
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
];

/** Debian's chromium (CHROMIUM_PATH overrides); its absence fails the test with how to fix it. */
function chromiumPath(): string {
  const found = [process.env.CHROMIUM_PATH, ...CHROMIUM_CANDIDATES].find(
    (candidate) => candidate !== undefined && candidate !== '' && existsSync(candidate),
  );
  assert.ok(found, 'no Chromium found: apt-get install chromium (or set CHROMIUM_PATH)');
  return found;
}

function screenshotDir(): string {
  return process.env.SAM3_SCREENSHOT_DIR ?? repoPath('artifacts', 'demo');
}

/**
 * The few browser objects the functions run in the page touch (this project compiles without
 * the DOM library, whose fetch types clash with Node's).
 */
interface PageElement {
  textContent: string | null;
  value: string;
  width: number;
  height: number;
  getContext(kind: '2d'): { getImageData(...box: number[]): { data: Uint8ClampedArray } } | null;
  dispatchEvent(event: Event): boolean;
  addEventListener(type: string, listener: (event: Event & { detail?: unknown }) => void): void;
}
interface PageWindow {
  document: { querySelector(selector: string): PageElement | null };
  drawnFrames?: number[];
}

/** Waits until the element's text matches. */
async function waitForText(page: Page, selector: string, text: RegExp): Promise<void> {
  await page.locator(selector).filter({ hasText: text }).waitFor();
}

interface Layer {
  width: number;
  height: number;
  /** Row-major: 1 where the layer has paint (alpha > 0). */
  painted: number[];
}

/** Which pixels of a stage's mask layer are painted. */
async function maskLayer(page: Page, stage: string): Promise<Layer> {
  return page.evaluate((selector) => {
    const { document } = globalThis as unknown as PageWindow;
    const canvas = document.querySelector(`${selector} canvas.masks`);
    if (canvas === null) throw new Error(`no mask layer in ${selector}`);
    const context = canvas.getContext('2d');
    if (context === null) throw new Error('no 2d context');
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    const painted: number[] = [];
    for (let i = 3; i < data.length; i += 4) painted.push(data[i] > 0 ? 1 : 0);
    return { width: canvas.width, height: canvas.height, painted };
  }, stage);
}

/** The union of masks, row-major, as the layer should show it. */
function union(masks: readonly CocoRle[], width: number, height: number): number[] {
  const out = new Array<number>(width * height).fill(0);
  for (const mask of masks) {
    assert.deepEqual(mask.size, [height, width]);
    decodeRle(mask).forEach((value, i) => {
      if (value !== 0) out[i] = 1;
    });
  }
  return out;
}

function count(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0);
}

/** Sets a range input's value as a user's drag would (an input and a change event). */
async function setRange(page: Page, selector: string, value: number): Promise<void> {
  await page.evaluate(
    ([target, next]) => {
      const { document } = globalThis as unknown as PageWindow;
      const input = document.querySelector(target as string);
      if (input === null) throw new Error(`no ${String(target)}`);
      input.value = String(next);
      input.dispatchEvent(new Event('input', { bubbles: true }));
      input.dispatchEvent(new Event('change', { bubbles: true }));
    },
    [selector, value] as const,
  );
}

interface StreamFrame {
  type: 'frame';
  frame_index: number;
  objects: { id: number; mask: CocoRle; present: boolean }[];
}

describe('demo page in headless Chromium', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  let dir: string;
  /** Console errors and CSP violations the page reported. */
  const pageErrors: string[] = [];

  before(async () => {
    dir = await makeTempDir('sam3-demo-test-');
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: { REQUIRE_API_KEY: 'true', API_KEYS: API_KEY },
    });
    browser = await chromium.launch({
      executablePath: chromiumPath(),
      headless: true,
      // Root in CI containers: Chromium's sandbox needs user namespaces it may not have.
      args: ['--no-sandbox'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(message.text());
    });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await mkdir(screenshotDir(), { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await removeDir(dir);
  });

  it('serves the page under its own CSP without a key and shows the random weights', async () => {
    const response = await page.goto(`${server.url}/demo`);
    assert.equal(response?.status(), 200);
    assert.equal(response?.headers()['content-security-policy'], DEMO_CONTENT_SECURITY_POLICY);
    await waitForText(page, '#server-status', /model/);
    const banner = page.locator('#random-weights-banner');
    assert.equal(await banner.isVisible(), true);
    assert.match((await banner.textContent()) ?? '', /random/i);
  });

  it('asks for the API key when the server requires one', async () => {
    const image = path.join(dir, 'shapes.png');
    await writeFile(image, await syntheticPng(96, 64, 3));
    await page.setInputFiles('#image-file', image);
    await page.locator('#image-stage').waitFor({ state: 'visible' });
    await page.fill('#image-text', 'shape');
    const refused = page.waitForResponse('**/api/v1/image/segment');
    await page.click('#image-text-form button[type=submit]');
    assert.equal((await refused).status(), 401);
    await page.locator('#error').waitFor({ state: 'visible' });
    assert.match((await page.textContent('#error')) ?? '', /^unauthorized: .*API key/);
    await page.fill('#api-key', API_KEY);
  });

  it('segments an image by text: the mask layer is painted exactly where the RLE says', async () => {
    // Threshold 0: random weights keep every query, so there is something to draw.
    await setRange(page, '#image-threshold', 0);
    const answered = page.waitForResponse('**/api/v1/image/segment');
    await page.click('#image-text-form button[type=submit]');
    const response = await answered;
    assert.equal(response.status(), 200);
    const request = response.request().postDataJSON() as Record<string, unknown>;
    assert.deepEqual(request.prompts, [{ type: 'text', text: 'shape' }]);
    assert.equal(request.confidence_threshold, 0);
    const body = (await response.json()) as { masks: CocoRle[]; num_masks: number };
    assert.ok(body.num_masks > 0, 'the tiny bundle found nothing to draw');
    await waitForText(page, '#image-summary', / in \d+ ms/);
    const layer = await maskLayer(page, '#image-stage');
    assert.deepEqual([layer.width, layer.height], [96, 64]);
    const expected = union(body.masks, 96, 64);
    assert.ok(count(expected) > 0, 'the masks are empty');
    assert.deepEqual(layer.painted, expected);
    assert.equal(await page.locator('#image-results li').count(), body.num_masks);
    assert.equal(await page.isHidden('#error'), true);
  });

  it('segments an image by a click at the clicked point', async () => {
    await page.click('#image-clear');
    const marks = page.locator('#image-stage canvas.marks');
    const box = await marks.boundingBox();
    assert.ok(box !== null);
    const answered = page.waitForResponse('**/api/v1/image/segment');
    // A quarter across and half-way down the picture.
    await marks.click({ position: { x: box.width * 0.25, y: box.height * 0.5 } });
    const response = await answered;
    assert.equal(response.status(), 200);
    const request = response.request().postDataJSON() as {
      prompts: { type: string; points: number[][]; point_labels: number[] }[];
    };
    assert.equal(request.prompts.length, 1);
    assert.equal(request.prompts[0].type, 'point');
    assert.deepEqual(request.prompts[0].point_labels, [1]);
    const [[x, y]] = request.prompts[0].points;
    assert.ok(Math.abs(x - 0.25) < 0.02 && Math.abs(y - 0.5) < 0.02, `clicked at ${x}, ${y}`);
    const body = (await response.json()) as { masks: CocoRle[]; labels: string[] };
    assert.deepEqual(body.labels, ['point']);
    await waitForText(page, '#image-summary', /^1 mask in/);
    const layer = await maskLayer(page, '#image-stage');
    assert.deepEqual(layer.painted, union(body.masks, 96, 64));
    await page.screenshot({ path: path.join(screenshotDir(), 'demo-image.png'), fullPage: true });
  });

  it('tracks a clicked object through a video, drawing frames as they arrive', async () => {
    const [width, height, frames] = [96, 64, 10];
    const video = path.join(dir, 'shapes.webm');
    await runFfmpeg(
      [
        ...['-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', '10'],
        ...['-i', 'pipe:0', '-c:v', 'libvpx-vp9', '-pix_fmt', 'yuv420p', '-crf', '10', '-b:v', '0'],
        ...['-deadline', 'realtime', '-cpu-used', '8', video],
      ],
      movingShapesFrames(width, height, frames),
    );
    await page.click('nav button[data-mode=video]');
    const started = page.waitForResponse('**/api/v1/video/session/start');
    await page.setInputFiles('#video-file', video);
    const start = await started;
    assert.equal(start.status(), 200);
    const session = (await start.json()) as {
      session_id: string;
      video_info: { total_frames: number };
    };
    assert.equal(session.video_info.total_frames, frames);
    await page.waitForSelector('#video-stage[data-shown-frame="0"]');
    const status = (await page.textContent('#video-status')) ?? '';
    assert.match(status, /10 frames/);
    assert.doesNotMatch(status, /masks only/, 'Chromium could not show the frames');

    // A click on the red disc (movingShapesFrames: it starts at the left, a third down).
    const marks = page.locator('#video-stage canvas.marks');
    const bounds = await marks.boundingBox();
    assert.ok(bounds !== null);
    const prompted = page.waitForResponse(`**/api/v1/video/session/${session.session_id}/prompt`);
    await marks.click({ position: { x: bounds.width * 0.09, y: bounds.height * 0.33 } });
    const prompt = await prompted;
    assert.equal(prompt.status(), 200);
    const promptBody = (await prompt.json()) as { obj_id: number[]; masks: CocoRle[] };
    assert.deepEqual(promptBody.obj_id, [1]);
    await page.locator('#video-objects li[data-id="1"]').waitFor();
    assert.deepEqual(
      (await maskLayer(page, '#video-stage')).painted,
      union(promptBody.masks, width, height),
    );

    // Every WebSocket message, as the browser received it, and every frame the page drew. (The
    // server requires a key, which a browser's WebSocket can only name as a subprotocol.)
    const messages: StreamFrame[] = [];
    page.on('websocket', (socket) => {
      socket.on('framereceived', ({ payload }) =>
        messages.push(JSON.parse(String(payload)) as StreamFrame),
      );
    });
    await page.evaluate(() => {
      const drawn: number[] = [];
      const page = globalThis as unknown as PageWindow;
      page.drawnFrames = drawn;
      page.document
        .querySelector('#video-stage')
        ?.addEventListener('framedrawn', (event) => drawn.push(event.detail as number));
    });
    await page.click('button[data-direction=forward]');
    await waitForText(page, '#video-status', /^propagated forward/);
    assert.equal(await page.isHidden('#error'), true, (await page.textContent('#error')) ?? '');
    const frameMessages = messages.filter((message) => message.type === 'frame');
    assert.deepEqual(
      frameMessages.map((message) => message.frame_index),
      Array.from({ length: frames }, (_, i) => i),
    );
    assert.deepEqual(messages.at(-1), { type: 'complete', total_frames: frames });
    await page.waitForSelector(`#video-stage[data-shown-frame="${frames - 1}"]`);
    const drawn = await page.evaluate(
      () => (globalThis as unknown as PageWindow).drawnFrames ?? [],
    );
    assert.ok(drawn.length > 0);
    assert.equal(drawn.at(-1), frames - 1);
    for (let i = 1; i < drawn.length; i++) assert.ok(drawn[i] > drawn[i - 1], `drawn ${drawn}`);
    const masksOf = (index: number): CocoRle[] =>
      frameMessages[index].objects.map((object) => object.mask);
    assert.deepEqual(
      (await maskLayer(page, '#video-stage')).painted,
      union(masksOf(frames - 1), width, height),
    );
    await page.screenshot({ path: path.join(screenshotDir(), 'demo-video.png'), fullPage: true });

    // Scrubbing back shows that frame's masks.
    await setRange(page, '#video-frame', 4);
    await page.waitForSelector('#video-stage[data-shown-frame="4"]');
    assert.deepEqual(
      (await maskLayer(page, '#video-stage')).painted,
      union(masksOf(4), width, height),
    );

    // Removing the object clears it from every frame.
    const removed = page.waitForResponse(`**/api/v1/video/session/${session.session_id}/object/1`);
    await page.click('#video-objects li[data-id="1"] button.remove');
    assert.equal((await removed).status(), 200);
    await page.locator('#video-objects li').waitFor({ state: 'detached' });
    assert.equal(count((await maskLayer(page, '#video-stage')).painted), 0);
  });

  it('reported no script error or CSP violation', () => {
    // The 401 of the keyless request is the browser's network log line, not a page error.
    const unexpected = pageErrors.filter((text) => !/status of 401/.test(text));
    assert.deepEqual(unexpected, []);
  });
});
