/** How prompts become queries (SPEC.md "Semantics of prompts"). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  PromptPlanError,
  planQueries,
  type NormalizedBox,
  type PromptInput,
} from '../../src/engine/prompt-plan';
import { planVideoPrompt } from '../../src/engine/video/sessions';

const B1: NormalizedBox = [0.5, 0.5, 0.2, 0.2];
const B2: NormalizedBox = [0.3, 0.3, 0.1, 0.1];
const B3: NormalizedBox = [0.7, 0.7, 0.1, 0.3];

describe('planQueries', () => {
  it('makes one concept per text prompt, in request order', () => {
    assert.deepEqual(
      planQueries([
        { type: 'text', text: 'cat' },
        { type: 'text', text: 'dog' },
      ]),
      [
        { kind: 'concept', text: 'cat', label: 'cat', boxes: [], boxLabels: [] },
        { kind: 'concept', text: 'dog', label: 'dog', boxes: [], boxLabels: [] },
      ],
    );
  });

  it('gives each box to the text before it, and leading boxes to the first text', () => {
    const plan = planQueries([
      { type: 'box', box: B1 },
      { type: 'text', text: 'cat' },
      { type: 'box', box: B2, label: false },
      { type: 'text', text: 'dog' },
      { type: 'box', box: B3, label: true },
    ]);
    assert.deepEqual(plan, [
      { kind: 'concept', text: 'cat', label: 'cat', boxes: [B1, B2], boxLabels: [1, 0] },
      { kind: 'concept', text: 'dog', label: 'dog', boxes: [B3], boxLabels: [1] },
    ]);
  });

  it('turns boxes without text into one "visual" concept labelled "box"', () => {
    assert.deepEqual(
      planQueries([
        { type: 'box', box: B1 },
        { type: 'box', box: B2, label: false },
      ]),
      [{ kind: 'concept', text: 'visual', label: 'box', boxes: [B1, B2], boxLabels: [1, 0] }],
    );
  });

  it('merges all point prompts into one interactive query with a box as its hint', () => {
    const prompts: PromptInput[] = [
      { type: 'point', points: [[0.1, 0.2]], point_labels: [1] },
      { type: 'box', box: B1 },
      { type: 'point', points: [[0.3, 0.4]], point_labels: [0] },
    ];
    assert.deepEqual(planQueries(prompts), [
      {
        kind: 'point',
        label: 'point',
        points: [
          [0.1, 0.2],
          [0.3, 0.4],
        ],
        pointLabels: [1, 0],
        box: B1,
      },
    ]);
  });

  it('keeps boxes as exemplars when text and points are mixed, results in request order', () => {
    const plan = planQueries([
      { type: 'point', points: [[0.1, 0.2]], point_labels: [1] },
      { type: 'text', text: 'cat' },
      { type: 'box', box: B1 },
    ]);
    assert.deepEqual(
      plan.map((q) => [q.kind, q.label]),
      [
        ['point', 'point'],
        ['concept', 'cat'],
      ],
    );
    assert.equal(plan[0].kind === 'point' && plan[0].box, null);
    assert.deepEqual(plan[1].kind === 'concept' && plan[1].boxes, [B1]);
  });

  it('refuses two boxes beside points without text, and mismatched point labels', () => {
    assert.throws(
      () =>
        planQueries([
          { type: 'point', points: [[0.1, 0.2]], point_labels: [1] },
          { type: 'box', box: B1 },
          { type: 'box', box: B2 },
        ]),
      (error: unknown) =>
        error instanceof PromptPlanError &&
        error.code === 'invalid_prompt' &&
        /at most one box/.test(error.message),
    );
    assert.throws(
      () => planQueries([{ type: 'point', points: [[0.1, 0.2]], point_labels: [1, 0] }]),
      /\/prompts\/0: point_labels must have one label per point/,
    );
  });
});

describe('planVideoPrompt', () => {
  it('gives each text its exemplar boxes, as in images; the same text twice is one concept', () => {
    assert.deepEqual(
      planVideoPrompt([
        { type: 'box', box: B1 },
        { type: 'text', text: 'cat' },
        { type: 'text', text: 'dog' },
        { type: 'box', box: B2, label: false },
        { type: 'text', text: 'cat' },
        { type: 'box', box: B3 },
      ]),
      {
        kind: 'concept',
        concepts: [
          { text: 'cat', boxes: [B1, B3], boxLabels: [1, 1] },
          { text: 'dog', boxes: [B2], boxLabels: [0] },
        ],
      },
    );
  });

  it('refuses clicks with a text, naming the click prompt', () => {
    assert.throws(
      () =>
        planVideoPrompt([
          { type: 'text', text: 'cat' },
          { type: 'point', points: [[0.1, 0.2]], point_labels: [1] },
        ]),
      (error: unknown) =>
        error instanceof PromptPlanError &&
        /^\/prompts\/1: in video, a text prompt takes exemplar boxes but no clicks/.test(
          error.message,
        ),
    );
  });

  it('makes clicks and one box without text one object prompt', () => {
    assert.deepEqual(
      planVideoPrompt([
        { type: 'box', box: B1 },
        { type: 'point', points: [[0.1, 0.2]], point_labels: [1] },
      ]),
      { kind: 'object', points: [[0.1, 0.2]], pointLabels: [1], box: B1 },
    );
  });
});
