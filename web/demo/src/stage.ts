/**
 * A stage: the picture (an image or a video frame) with two layers over it at the same pixel
 * size, one for masks and one for clicks and boxes; the top layer takes the gestures.
 */
import { byId } from './context';
import { attachGestures, type GestureHandlers } from './gestures';
import { drawMarks, drawMasks, type BoxMark, type Click, type ColoredMask } from './overlay';

export class Stage {
  readonly root: HTMLElement;
  private readonly picture: HTMLCanvasElement;
  private readonly masks: HTMLCanvasElement;
  private readonly marks: HTMLCanvasElement;
  width = 0;
  height = 0;

  constructor(rootId: string, handlers: GestureHandlers, enabled: () => boolean) {
    this.root = byId(rootId);
    const layer = (name: string): HTMLCanvasElement => {
      const canvas = this.root.querySelector<HTMLCanvasElement>(`canvas.${name}`);
      if (canvas === null) throw new Error(`#${rootId} has no canvas.${name}`);
      return canvas;
    };
    this.picture = layer('picture');
    this.masks = layer('masks');
    this.marks = layer('marks');
    attachGestures(this.marks, handlers, () => this.width > 0 && enabled());
  }

  /** Draws the picture at its own size (the mask layer's size too). */
  showPicture(source: CanvasImageSource, width: number, height: number): void {
    this.width = width;
    this.height = height;
    this.picture.width = width;
    this.picture.height = height;
    this.picture.getContext('2d')?.drawImage(source, 0, 0, width, height);
    this.root.hidden = false;
  }

  showMasks(masks: readonly ColoredMask[]): void {
    drawMasks(this.masks, this.width, this.height, masks);
  }

  showMarks(clicks: readonly Click[], boxes: readonly BoxMark[]): void {
    drawMarks(this.marks, clicks, boxes);
  }
}
