/**
 * Image mode: open an image, then type a concept (with dragged boxes as exemplars), drag boxes
 * alone (a "visual" concept), or click an object (clicks accumulate; Alt marks a negative).
 * Every mask of the answer is drawn in its colour and listed with its label and score.
 */
import { toBase64, type Prompt, type SegmentResponse } from '../../../clients/typescript/src/index';
import { byId, type DemoContext } from './context';
import { cssColor, type BoxMark, type Click } from './overlay';
import { Stage } from './stage';

export class ImageView {
  private readonly stage: Stage;
  private readonly text = byId<HTMLInputElement>('image-text');
  private readonly threshold = byId<HTMLInputElement>('image-threshold');
  private readonly results = byId<HTMLOListElement>('image-results');
  private readonly summary = byId<HTMLElement>('image-summary');
  private image: string | null = null;
  private clicks: Click[] = [];
  private boxes: BoxMark[] = [];
  /** The answer's boxes, outlined in their masks' colours with label and score. */
  private found: BoxMark[] = [];
  /** Only the answer to the latest request is shown. */
  private sequence = 0;

  constructor(private readonly context: DemoContext) {
    this.stage = new Stage(
      'image-stage',
      {
        click: (point, positive) => {
          this.boxes = [];
          this.clicks.push({ point, positive });
          void this.segment();
        },
        box: (box, positive) => {
          this.clicks = [];
          this.boxes.push({ box, positive });
          void this.segment();
        },
        dragging: (box, positive) =>
          this.stage.showMarks(
            this.clicks,
            box === null ? this.boxes : [...this.boxes, { box, positive }],
          ),
      },
      () => this.image !== null,
    );
    byId<HTMLInputElement>('image-file').addEventListener('change', (event) => {
      const file = (event.target as HTMLInputElement).files?.[0];
      if (file !== undefined) void this.open(file);
    });
    byId<HTMLFormElement>('image-text-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.clicks = [];
      void this.segment();
    });
    byId<HTMLButtonElement>('image-clear').addEventListener('click', () => this.clear());
    const thresholdLabel = byId<HTMLOutputElement>('image-threshold-value');
    this.threshold.addEventListener('input', () => (thresholdLabel.value = this.threshold.value));
    this.threshold.addEventListener('change', () => {
      if (this.clicks.length === 0 && this.hasConcept()) void this.segment();
    });
  }

  private async open(file: File): Promise<void> {
    this.context.clearError();
    try {
      const bitmap = await createImageBitmap(file);
      this.image = toBase64(new Uint8Array(await file.arrayBuffer()));
      this.stage.showPicture(bitmap, bitmap.width, bitmap.height);
      bitmap.close();
      this.clear();
    } catch (error) {
      this.image = null;
      this.context.reportError(
        error instanceof DOMException ? new Error(`cannot open ${file.name} as an image`) : error,
      );
    }
  }

  private clear(): void {
    this.sequence++;
    this.clicks = [];
    this.boxes = [];
    this.found = [];
    this.stage.showMasks([]);
    this.stage.showMarks([], []);
    this.results.replaceChildren();
    this.summary.textContent = '';
  }

  private hasConcept(): boolean {
    return this.text.value.trim() !== '' || this.boxes.length > 0;
  }

  /** The prompts of the current gestures: clicks (one object), or a text and/or boxes. */
  private prompts(): Prompt[] {
    if (this.clicks.length > 0) {
      return [
        {
          type: 'point' as const,
          points: this.clicks.map((click) => click.point),
          point_labels: this.clicks.map((click) => (click.positive ? 1 : 0)),
        },
      ];
    }
    const text = this.text.value.trim();
    return [
      ...(text === '' ? [] : [{ type: 'text' as const, text }]),
      ...this.boxes.map(({ box, positive }) => ({ type: 'box' as const, box, label: positive })),
    ];
  }

  private async segment(): Promise<void> {
    if (this.image === null) return;
    this.stage.showMarks(this.clicks, this.boxes);
    const prompts = this.prompts();
    if (prompts.length === 0) return;
    this.found = [];
    const sequence = ++this.sequence;
    this.context.clearError();
    this.summary.textContent = 'segmenting…';
    try {
      const response = await this.context.client().segment({
        image: this.image,
        prompts,
        confidence_threshold: Number(this.threshold.value),
      });
      if (sequence === this.sequence) this.show(response);
    } catch (error) {
      if (sequence !== this.sequence) return;
      this.summary.textContent = '';
      this.context.reportError(error);
    }
  }

  private show(response: SegmentResponse): void {
    this.stage.showMasks(response.masks.map((rle, index) => ({ rle, color: index })));
    this.found = response.boxes.map((box, index) => ({
      box: box as BoxMark['box'],
      positive: true,
      color: index,
      label: `${response.labels[index]} ${response.scores[index].toFixed(2)}`,
    }));
    this.stage.showMarks(this.clicks, [...this.boxes, ...this.found]);
    this.results.replaceChildren(
      ...response.masks.map((_mask, index) => {
        const item = document.createElement('li');
        const swatch = document.createElement('span');
        swatch.className = 'swatch';
        swatch.style.background = cssColor(index);
        item.append(swatch, `${response.labels[index]} · ${response.scores[index].toFixed(3)}`);
        return item;
      }),
    );
    this.summary.textContent =
      `${response.num_masks} mask${response.num_masks === 1 ? '' : 's'} in ` +
      `${Math.round(response.inference_time_ms)} ms`;
  }
}
