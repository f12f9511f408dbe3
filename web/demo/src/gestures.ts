/**
 * Pointer gestures on a stage: a click is a point, a drag a box, both in normalized
 * coordinates of the element (which shows the image scaled, so CSS pixels are converted).
 * Alt (or the right button) makes either negative.
 */

/** Movement, CSS pixels, below which a press is a click rather than a drag. */
const DRAG_THRESHOLD_PX = 5;

export interface GestureHandlers {
  click(point: [number, number], positive: boolean): void;
  box(box: [number, number, number, number], positive: boolean): void;
  /** The box being dragged (null when the drag ends or is cancelled). */
  dragging?(box: [number, number, number, number] | null, positive: boolean): void;
}

function clamp01(value: number): number {
  return Math.min(1, Math.max(0, value));
}

export function normalizedPoint(element: Element, event: MouseEvent): [number, number] {
  const rect = element.getBoundingClientRect();
  return [
    clamp01((event.clientX - rect.left) / rect.width),
    clamp01((event.clientY - rect.top) / rect.height),
  ];
}

/** [cx, cy, w, h] of the rectangle between two normalized corners. */
function boxBetween(a: [number, number], b: [number, number]): [number, number, number, number] {
  const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
  const [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
  return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0];
}

/** Listens on `element`; `enabled()` false ignores presses (nothing loaded, a request running). */
export function attachGestures(
  element: HTMLElement,
  handlers: GestureHandlers,
  enabled: () => boolean,
): void {
  let start: { x: number; y: number; point: [number, number]; positive: boolean } | null = null;
  let dragged = false;

  element.addEventListener('contextmenu', (event) => event.preventDefault());
  element.addEventListener('pointerdown', (event) => {
    if (!enabled() || (event.button !== 0 && event.button !== 2)) return;
    element.setPointerCapture(event.pointerId);
    start = {
      x: event.clientX,
      y: event.clientY,
      point: normalizedPoint(element, event),
      positive: !(event.altKey || event.button === 2),
    };
    dragged = false;
  });
  element.addEventListener('pointermove', (event) => {
    if (start === null) return;
    if (
      !dragged &&
      Math.hypot(event.clientX - start.x, event.clientY - start.y) >= DRAG_THRESHOLD_PX
    ) {
      dragged = true;
    }
    if (dragged) {
      handlers.dragging?.(boxBetween(start.point, normalizedPoint(element, event)), start.positive);
    }
  });
  element.addEventListener('pointerup', (event) => {
    if (start === null) return;
    const { point, positive } = start;
    start = null;
    if (!dragged) {
      handlers.click(point, positive);
      return;
    }
    handlers.dragging?.(null, positive);
    const box = boxBetween(point, normalizedPoint(element, event));
    if (box[2] > 0 && box[3] > 0) handlers.box(box, positive);
  });
  element.addEventListener('pointercancel', () => {
    if (start !== null && dragged) handlers.dragging?.(null, start.positive);
    start = null;
  });
}
