/**
 * Text prompts in video through the API (docs/video-concepts.md) on the real addon and the
 * tiny bundle: the WebSocket stream equals the non-streaming result with the default hotstart
 * delay and with delay 0, frames in order; status and list report concepts and objects;
 * removing a concept; the object limit drops detections and says so; and the refusals (text
 * with clicks or an obj_id, clicks for a new object in a concept session, text in a session of
 * clicked objects, a delay above the model's, an unknown concept).
 */
import assert from 'node:assert/strict';
import { cp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  VideoApi,
  expectApiError,
  expectJson,
  exportTinyBundle,
  startTestServer,
  type StreamMessage,
  type TestServer,
} from '../helpers/server';
import { conceptShapesFrames, makeTempDir, removeDir, writeLosslessVideo } from '../helpers/videos';

const WIDTH = 112;
const HEIGHT = 84;
const FRAMES = 12;

interface ConceptPromptBody {
  frame_index: number;
  obj_id: number[];
  concept_ids: number[];
  tracker_scores: number[];
  concepts: { concept_id: number; text: string }[];
  objects_dropped?: number;
  status: string;
}

interface FrameBody {
  frame_index: number;
  objects: { id: number; concept_id: number }[];
  objects_dropped?: number;
}

/**
 * The tiny bundle with its detection thresholds (score_threshold_detection, new_det_thresh)
 * lowered in its manifest, in `dir`: the random detector then finds several instances per
 * frame, which these tests need (the parity tests use the bundle as exported).
 */
async function eagerBundle(dir: string): Promise<string> {
  const bundle = path.join(dir, 'bundle');
  await cp(await exportTinyBundle(), bundle, { recursive: true });
  const file = path.join(bundle, 'manifest.json');
  const manifest = JSON.parse(await readFile(file, 'utf8'));
  manifest.concept.score_threshold_detection = 0.2;
  manifest.concept.new_det_thresh = 0.3;
  await writeFile(file, JSON.stringify(manifest));
  return bundle;
}

/** The messages of one WebSocket propagation, until the server closes the socket. */
function streamOverWebSocket(url: string, request: unknown): Promise<StreamMessage[]> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const messages: StreamMessage[] = [];
    ws.on('open', () => ws.send(JSON.stringify(request)));
    ws.on('message', (data) => messages.push(JSON.parse(String(data)) as StreamMessage));
    ws.on('close', () => resolve(messages));
    ws.on('error', reject);
  });
}

describe('text prompts in video (tiny bundle)', () => {
  let server: TestServer;
  let api: VideoApi;
  let dir: string;
  let video: string;

  before(async () => {
    dir = await makeTempDir();
    video = path.join(dir, 'concepts.mp4');
    await writeLosslessVideo(video, conceptShapesFrames(WIDTH, HEIGHT, FRAMES), WIDTH, HEIGHT);
    server = await startTestServer({
      bundleDir: await eagerBundle(dir),
      // Without the official mask NMS, which leaves one of the random detector's overlapping
      // masks.
      env: {
        RATE_LIMIT_ENABLED: 'false',
        UPLOAD_DIR: dir,
        VIDEO_PATH_ROOTS: dir,
        VIDEO_OFFICIAL_POSTPROCESS: 'false',
      },
    });
    api = new VideoApi(server.url);
  });

  after(async () => {
    await server?.close();
    await removeDir(dir);
  });

  async function conceptSession(
    texts = ['object'],
  ): Promise<{ id: string; body: ConceptPromptBody }> {
    const id = await api.startPath(video);
    const body = await expectJson<ConceptPromptBody>(
      await api.prompt(id, {
        frame_index: 0,
        prompts: texts.map((text) => ({ type: 'text', text })),
        obj_id: null,
      }),
    );
    return { id, body };
  }

  it('streams over the WebSocket exactly what a plain propagation returns, in order', async () => {
    for (const delay of [undefined, 0]) {
      const request = delay === undefined ? {} : { hotstart_delay: delay };
      const plain = await conceptSession();
      assert.ok(plain.body.obj_id.length > 0, 'the prompt frame holds objects');
      const results = (
        await expectJson<{ results: Record<string, FrameBody>; total_frames: number }>(
          await api.propagate(plain.id, request),
        )
      ).results;
      const streamed = await conceptSession();
      assert.deepEqual(streamed.body, plain.body, 'the same prompt gives the same objects');
      const messages = await streamOverWebSocket(
        `${server.wsUrl}/ws/propagate/${streamed.id}`,
        request,
      );
      const frames = messages.filter((m) => m.type === 'frame') as unknown as ({
        type: 'frame';
      } & FrameBody)[];
      assert.deepEqual(messages.at(-1), { type: 'complete', total_frames: FRAMES });
      assert.deepEqual(
        frames.map((f) => f.frame_index),
        [...Array(FRAMES).keys()],
        `delay ${delay}: every frame once, in order`,
      );
      for (const frame of frames) {
        const { type, ...body } = frame;
        assert.equal(type, 'frame');
        assert.deepEqual(body, results[String(frame.frame_index)], `frame ${frame.frame_index}`);
      }
      const counts = frames.map((f) => f.objects.length);
      // What is compared holds objects (random weights: many tracks do not survive hotstart).
      assert.ok(
        counts.filter((n) => n > 0).length >= 2 && counts.reduce((a, b) => a + b) >= 3,
        `delay ${delay}: frames hold objects (objects per frame: ${counts.join(' ')})`,
      );
    }
  });

  it('reports concepts and their objects; removing a concept removes its objects', async () => {
    const { id, body } = await conceptSession(['object', 'shape', 'object']);
    assert.deepEqual(body.concepts, [
      { concept_id: 1, text: 'object' },
      { concept_id: 2, text: 'shape' },
    ]);
    assert.equal(body.concept_ids.length, body.obj_id.length);
    const status = await expectJson<{
      current_objects: number[];
      concepts: { concept_id: number; text: string; object_ids: number[] }[];
    }>(await api.status(id));
    assert.deepEqual(
      status.concepts.map((c) => [c.concept_id, c.text]),
      [
        [1, 'object'],
        [2, 'shape'],
      ],
    );
    assert.deepEqual(
      status.concepts.flatMap((c) => c.object_ids).sort((a, b) => a - b),
      [...status.current_objects].sort((a, b) => a - b),
      'every object belongs to a concept',
    );
    const second = status.concepts[1];
    const removed = await expectJson<{ removed_objects: number[]; status: string }>(
      await fetch(api.session(id, '/concept/2'), { method: 'DELETE' }),
    );
    assert.deepEqual(removed, {
      session_id: id,
      concept_id: 2,
      removed_objects: second.object_ids,
      status: 'removed',
    });
    const after = await expectJson<{ current_objects: number[]; concepts: unknown[] }>(
      await api.status(id),
    );
    assert.equal(after.concepts.length, 1);
    for (const objId of second.object_ids) assert.ok(!after.current_objects.includes(objId));
    // No frame of a later propagation shows the removed concept.
    const results = (
      await expectJson<{ results: Record<string, FrameBody> }>(
        await api.propagate(id, { hotstart_delay: 0, max_frames: 4 }),
      )
    ).results;
    for (const frame of Object.values(results)) {
      for (const object of frame.objects) assert.equal(object.concept_id, 1);
    }
    await expectApiError(
      await fetch(api.session(id, '/concept/2'), { method: 'DELETE' }),
      404,
      'not_found',
    );
    const list = await expectJson<{ sessions: { session_id: string; objects_count: number }[] }>(
      await api.list(),
    );
    const now = await expectJson<{ current_objects: number[] }>(await api.status(id));
    const listed = list.sessions.find((s) => s.session_id === id);
    assert.equal(listed?.objects_count, now.current_objects.length);
  });

  it('takes exemplar boxes with a text: they change what the detector finds there', async () => {
    const plain = await conceptSession();
    const withBoxes = await api.startPath(video);
    const boxed = await expectJson<ConceptPromptBody & { scores: number[] }>(
      await api.prompt(withBoxes, {
        frame_index: 0,
        prompts: [
          { type: 'box', box: [0.2, 0.5, 0.2, 0.3], label: true },
          { type: 'text', text: 'object' },
          { type: 'box', box: [0.8, 0.2, 0.1, 0.1], label: false },
        ],
        obj_id: null,
      }),
    );
    // The boxes are the text's exemplars: one concept, and the same objects (ids, concepts,
    // scores) would mean the detector never saw them.
    assert.deepEqual(boxed.concepts, [{ concept_id: 1, text: 'object' }]);
    assert.ok(boxed.obj_id.length > 0 && plain.body.obj_id.length > 0, 'both find objects');
    const plainScores = (plain.body as ConceptPromptBody & { scores: number[] }).scores;
    assert.notDeepEqual(boxed.scores, plainScores);
  });

  it('refuses what concept tracking cannot do, naming the field', async () => {
    const { id, body } = await conceptSession();
    const refuse = async (request: unknown, field: string): Promise<void> => {
      const message = await expectApiError(await api.prompt(id, request), 400, 'invalid_prompt');
      assert.ok(message.includes(field), `${message} names ${field}`);
    };
    await refuse(
      {
        frame_index: 0,
        prompts: [
          { type: 'text', text: 'object' },
          { type: 'point', points: [[0.5, 0.5]], point_labels: [1] },
        ],
        obj_id: null,
      },
      '/prompts',
    );
    await refuse(
      { frame_index: 0, prompts: [{ type: 'text', text: 'object' }], obj_id: body.obj_id[0] },
      '/obj_id',
    );
    await refuse(
      {
        frame_index: 0,
        prompts: [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1] }],
        obj_id: null,
      },
      '/obj_id',
    );
    const delay = await expectApiError(
      await api.propagate(id, { hotstart_delay: 16 }),
      400,
      'invalid_request',
    );
    assert.ok(delay.includes('/hotstart_delay'), delay);
    // A session of clicked objects takes no text.
    const clicked = await api.startPath(video);
    await api.click(clicked, 0, 0.5, 0.5);
    const text = await expectApiError(
      await api.prompt(clicked, {
        frame_index: 0,
        prompts: [{ type: 'text', text: 'object' }],
        obj_id: null,
      }),
      400,
      'invalid_prompt',
    );
    assert.ok(text.includes('reset'), text);
  });

  it('a refinement click on a detected object scores it 1 from then on', async () => {
    const { id, body } = await conceptSession();
    const objId = body.obj_id[0];
    const refined = await expectJson<{ obj_id: number[]; scores: number[] }>(
      await api.prompt(id, {
        frame_index: 0,
        prompts: [{ type: 'point', points: [[0.1, 0.5]], point_labels: [1] }],
        obj_id: objId,
      }),
    );
    const at = refined.obj_id.indexOf(objId);
    if (at >= 0) assert.equal(refined.scores[at], 1);
    const results = (
      await expectJson<{ results: Record<string, { objects: { id: number; score: number }[] }> }>(
        await api.propagate(id, { hotstart_delay: 0, max_frames: 3 }),
      )
    ).results;
    const scores = Object.values(results).flatMap((f) =>
      f.objects.filter((o) => o.id === objId).map((o) => o.score),
    );
    assert.ok(scores.length > 0, 'the refined object is tracked');
    for (const score of scores) assert.equal(score, 1);
  });
});

describe('the object limit drops detections and says so', () => {
  let server: TestServer;
  let api: VideoApi;
  let dir: string;
  let video: string;

  before(async () => {
    dir = await makeTempDir();
    video = path.join(dir, 'concepts.mp4');
    await writeLosslessVideo(video, conceptShapesFrames(WIDTH, HEIGHT, 4), WIDTH, HEIGHT);
    server = await startTestServer({
      bundleDir: await eagerBundle(dir),
      env: {
        UPLOAD_DIR: dir,
        VIDEO_PATH_ROOTS: dir,
        VIDEO_MAX_OBJECTS: '1',
        VIDEO_OFFICIAL_POSTPROCESS: 'false',
      },
    });
    api = new VideoApi(server.url);
  });

  after(async () => {
    await server?.close();
    await removeDir(dir);
  });

  it('tracks at most VIDEO_MAX_OBJECTS objects', async () => {
    const id = await api.startPath(video);
    const body = await expectJson<ConceptPromptBody>(
      await api.prompt(id, {
        frame_index: 0,
        prompts: [{ type: 'text', text: 'object' }],
        obj_id: null,
      }),
    );
    assert.equal(body.obj_id.length, 1);
    assert.ok((body.objects_dropped ?? 0) >= 1, 'more than one detection: some were dropped');
    const status = await expectJson<{ current_objects: number[] }>(await api.status(id));
    assert.equal(status.current_objects.length, 1);
  });
});
