/**
 * How the prompts of one segment request become model queries (SPEC.md, "Semantics of
 * prompts"), in request order:
 *
 * - Concept queries (the detector): each text prompt names one concept; box prompts are its
 *   visual exemplars (label true: positive, false: negative). A box belongs to the text prompt
 *   before it in the request (boxes ahead of every text belong to the first text). Boxes in a
 *   request without text form one concept with the official "visual" text, labelled "box".
 * - One interactive query (the SAM heads): all point prompts' clicks together select one
 *   object, labelled "point". In a request without text prompts, one box prompt is its region
 *   hint instead of an exemplar; more than one box is ambiguous and refused.
 *
 * Results are concatenated in the order of each query's first prompt.
 */
import { MAX_QUERY_CLICKS } from './input-limits';

/** [cx, cy, w, h], each in [0, 1] of the image size. */
export type NormalizedBox = [number, number, number, number];

/** The text the official implementation gives a box-only (visual) concept. */
export const VISUAL_CONCEPT_TEXT = 'visual';

export interface TextPromptInput {
  type: 'text';
  text: string;
}
export interface BoxPromptInput {
  type: 'box';
  box: NormalizedBox;
  /** Positive exemplar unless false. */
  label?: boolean;
}
export interface PointPromptInput {
  type: 'point';
  points: [number, number][];
  point_labels: number[];
}
export type PromptInput = TextPromptInput | BoxPromptInput | PointPromptInput;

export interface ConceptPlan {
  kind: 'concept';
  /** What the text encoder reads. */
  text: string;
  /** What `labels` says for its instances: the prompt text, or "box" for a visual concept. */
  label: string;
  boxes: NormalizedBox[];
  boxLabels: (0 | 1)[];
}

export interface PointPlan {
  kind: 'point';
  label: 'point';
  points: [number, number][];
  pointLabels: (0 | 1)[];
  /** Region hint. */
  box: NormalizedBox | null;
}

export type QueryPlan = ConceptPlan | PointPlan;

/** A combination of prompts that has no single meaning; its message says which prompt. */
export class PromptPlanError extends Error {
  override readonly name = 'PromptPlanError';
  readonly code = 'invalid_prompt';
}

/** Turns validated prompts into queries (throws PromptPlanError for ambiguous ones). */
export function planQueries(prompts: readonly PromptInput[]): QueryPlan[] {
  const hasText = prompts.some((p) => p.type === 'text');
  const hasPoints = prompts.some((p) => p.type === 'point');
  const boxCount = prompts.filter((p) => p.type === 'box').length;
  const boxIsHint = hasPoints && !hasText;
  if (boxIsHint && boxCount > 1) {
    throw new PromptPlanError(
      `/prompts: point prompts take at most one box as their region hint (got ${boxCount}); ` +
        'send exemplar boxes with a text prompt',
    );
  }

  // [position of the query's first prompt, query]
  const placed: [number, QueryPlan][] = [];
  let concept: ConceptPlan | null = null;
  const orphanBoxes: [number, BoxPromptInput][] = [];
  let pointPlan: PointPlan | null = null;

  prompts.forEach((prompt, index) => {
    if (prompt.type === 'text') {
      concept = {
        kind: 'concept',
        text: prompt.text,
        label: prompt.text,
        boxes: [],
        boxLabels: [],
      };
      placed.push([index, concept]);
      return;
    }
    if (prompt.type === 'point') {
      if (prompt.points.length !== prompt.point_labels.length) {
        throw new PromptPlanError(
          `/prompts/${index}: point_labels must have one label per point ` +
            `(${prompt.points.length} points, ${prompt.point_labels.length} labels)`,
        );
      }
      if (pointPlan === null) {
        pointPlan = { kind: 'point', label: 'point', points: [], pointLabels: [], box: null };
        placed.push([index, pointPlan]);
      }
      pointPlan.points.push(...prompt.points);
      pointPlan.pointLabels.push(...prompt.point_labels.map((l) => (l === 1 ? 1 : 0) as 0 | 1));
      return;
    }
    if (boxIsHint) {
      orphanBoxes.push([index, prompt]);
      return;
    }
    const target: ConceptPlan | null = concept;
    if (target === null) {
      orphanBoxes.push([index, prompt]);
      return;
    }
    target.boxes.push(prompt.box);
    target.boxLabels.push(prompt.label === false ? 0 : 1);
  });

  const clicks = (pointPlan as PointPlan | null)?.points.length ?? 0;
  if (clicks > MAX_QUERY_CLICKS) {
    throw new PromptPlanError(
      `/prompts: the point prompts of a request are one object's clicks, at most ` +
        `${MAX_QUERY_CLICKS} together (got ${clicks})`,
    );
  }
  if (boxIsHint) {
    const hint = orphanBoxes[0];
    if (hint !== undefined) (pointPlan as unknown as PointPlan).box = hint[1].box;
  } else if (orphanBoxes.length > 0) {
    const firstConcept = placed.find(([, q]) => q.kind === 'concept')?.[1] as
      ConceptPlan | undefined;
    if (firstConcept !== undefined) {
      // Boxes ahead of every text prompt are exemplars of the first text.
      firstConcept.boxes.unshift(...orphanBoxes.map(([, b]) => b.box));
      firstConcept.boxLabels.unshift(
        ...orphanBoxes.map(([, b]) => (b.label === false ? 0 : 1) as 0 | 1),
      );
    } else {
      placed.push([
        orphanBoxes[0][0],
        {
          kind: 'concept',
          text: VISUAL_CONCEPT_TEXT,
          label: 'box',
          boxes: orphanBoxes.map(([, b]) => b.box),
          boxLabels: orphanBoxes.map(([, b]) => (b.label === false ? 0 : 1) as 0 | 1),
        },
      ]);
    }
  }
  return placed.sort((a, b) => a[0] - b[0]).map(([, query]) => query);
}
