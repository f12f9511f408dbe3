/**
 * Video mode: upload a video (a session), click an object or type a concept on any frame,
 * propagate forward, backward or both over the WebSocket with every frame drawn as it arrives,
 * scrub the frames, remove an object, cancel. Frames are decoded by the browser from the same
 * file; the masks come from the server.
 */
import type {
  StartSessionResponse,
  TrackedObject,
  VideoPromptResponse,
} from '../../../clients/typescript/src/index';
import { byId, isAbort, type DemoContext } from './context';
import { cssColor, type Click } from './overlay';
import { Stage } from './stage';

interface Session {
  id: string;
  frames: number;
  fps: number;
  width: number;
  height: number;
}

type Direction = 'forward' | 'backward' | 'both';

/** Waits for `event` on `target` (rejects on the video's `error`). */
function once(target: HTMLVideoElement, event: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      target.removeEventListener('error', fail);
      resolve();
    };
    const fail = (): void => {
      target.removeEventListener(event, done);
      reject(new Error('the browser cannot decode this video'));
    };
    target.addEventListener(event, done, { once: true });
    target.addEventListener('error', fail, { once: true });
  });
}

export class VideoView {
  private readonly stage: Stage;
  private readonly video = byId<HTMLVideoElement>('video-source');
  private readonly slider = byId<HTMLInputElement>('video-frame');
  private readonly frameLabel = byId<HTMLOutputElement>('video-frame-label');
  private readonly statusLine = byId<HTMLElement>('video-status');
  private readonly objectList = byId<HTMLUListElement>('video-objects');
  private readonly newObject = byId<HTMLButtonElement>('video-new-object');
  private readonly cancel = byId<HTMLButtonElement>('video-cancel');
  private session: Session | null = null;
  /** The browser shows the file's frames (otherwise masks are drawn on a blank frame). */
  private playable = false;
  private objectUrl: string | null = null;
  /** Each frame's objects as the server last answered them. */
  private results = new Map<number, TrackedObject[]>();
  private concepts = new Map<number, string>();
  /** Clicks of each object on each frame (`id@frame`): a refinement sends them all again. */
  private clicks = new Map<string, Click[]>();
  /** The object clicks refine; null: the next click starts a new object. */
  private selected: number | null = null;
  private nextObjectId = 1;
  private busy = false;
  private propagation: AbortController | null = null;
  /** The frame on screen, the one asked for, and whether a seek is under way. */
  private shown = -1;
  private wanted = 0;
  private drawing = false;

  constructor(private readonly context: DemoContext) {
    this.stage = new Stage(
      'video-stage',
      { click: (point, positive) => void this.click(point, positive), box: () => undefined },
      () => this.session !== null && !this.busy,
    );
    byId<HTMLInputElement>('video-file').addEventListener('change', (event) => {
      const file = (event.target as HTMLInputElement).files?.[0];
      if (file !== undefined) void this.open(file);
    });
    this.slider.addEventListener('input', () => this.showFrame(Number(this.slider.value)));
    this.newObject.addEventListener('click', () => this.select(null));
    byId<HTMLFormElement>('video-text-form').addEventListener('submit', (event) => {
      event.preventDefault();
      void this.addConcept();
    });
    for (const button of document.querySelectorAll<HTMLButtonElement>('button[data-direction]')) {
      button.addEventListener(
        'click',
        () => void this.propagate(button.dataset.direction as Direction),
      );
    }
    this.cancel.addEventListener('click', () => this.propagation?.abort());
    byId<HTMLButtonElement>('video-reset').addEventListener('click', () => void this.reset());
  }

  /** Closes the session (the page is going away). */
  dispose(): void {
    this.propagation?.abort();
    if (this.session !== null)
      void this.context
        .client()
        .closeSession(this.session.id)
        .catch(() => undefined);
  }

  private setStatus(text: string): void {
    this.statusLine.textContent = text;
  }

  private setBusy(busy: boolean): void {
    this.busy = busy;
    for (const control of document.querySelectorAll<HTMLButtonElement | HTMLInputElement>(
      '#video-mode .needs-session',
    )) {
      control.disabled = busy || this.session === null;
    }
    this.cancel.disabled = this.propagation === null;
  }

  private async open(file: File): Promise<void> {
    this.context.clearError();
    this.propagation?.abort();
    const previous = this.session;
    this.session = null;
    this.results.clear();
    this.concepts.clear();
    this.clicks.clear();
    this.select(null);
    this.nextObjectId = 1;
    this.renderObjects();
    this.setBusy(true);
    if (previous !== null)
      void this.context
        .client()
        .closeSession(previous.id)
        .catch(() => undefined);
    if (this.objectUrl !== null) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = URL.createObjectURL(file);
    const loaded = once(this.video, 'loadeddata').then(
      () => true,
      () => false,
    );
    this.video.src = this.objectUrl;
    this.video.load();
    try {
      this.setStatus(`uploading ${file.name}…`);
      const started: StartSessionResponse = await this.context
        .client()
        .startSession({ video: file, filename: file.name });
      const { video_info: info } = started;
      this.session = {
        id: started.session_id,
        frames: info.total_frames,
        fps: info.fps,
        width: info.resolution.width,
        height: info.resolution.height,
      };
      this.playable = await loaded;
      this.slider.max = String(Math.max(0, info.total_frames - 1));
      this.slider.value = '0';
      this.shown = -1;
      this.setStatus(
        `session ${started.session_id.slice(0, 8)} · ${info.total_frames} frames at ` +
          `${info.fps} fps, ${info.resolution.width}x${info.resolution.height}` +
          (this.playable ? '' : ' · this browser cannot show its frames: masks only'),
      );
      this.showFrame(0);
    } catch (error) {
      this.setStatus('');
      this.context.reportError(error);
    } finally {
      this.setBusy(false);
    }
  }

  /** Asks for frame `index` on screen; seeks are serialized and the latest request wins. */
  private showFrame(index: number): void {
    this.wanted = index;
    this.slider.value = String(index);
    this.frameLabel.value = this.session === null ? '' : `${index + 1} / ${this.session.frames}`;
    if (!this.drawing) void this.drawLoop();
  }

  private async drawLoop(): Promise<void> {
    this.drawing = true;
    try {
      while (this.session !== null && this.shown !== this.wanted) {
        const index = this.wanted;
        await this.drawFrame(this.session, index);
        this.shown = index;
        this.stage.root.dataset.shownFrame = String(index);
        this.stage.root.dispatchEvent(new CustomEvent('framedrawn', { detail: index }));
      }
    } catch (error) {
      this.context.reportError(error);
    } finally {
      this.drawing = false;
    }
  }

  private async drawFrame(session: Session, index: number): Promise<void> {
    if (this.playable) {
      // The middle of the frame's display interval: clear of rounding at its edges.
      const time = (index + 0.5) / session.fps;
      if (Math.abs(this.video.currentTime - time) > 1e-3 || this.video.seeking) {
        const seeked = once(this.video, 'seeked');
        this.video.currentTime = time;
        await seeked;
      }
      this.stage.showPicture(this.video, session.width, session.height);
    } else {
      const blank = document.createElement('canvas');
      blank.width = session.width;
      blank.height = session.height;
      const context = blank.getContext('2d');
      if (context !== null) {
        context.fillStyle = '#444';
        context.fillRect(0, 0, session.width, session.height);
      }
      this.stage.showPicture(blank, session.width, session.height);
    }
    this.drawOverlay(index);
  }

  /** Masks and the selected object's clicks of frame `index`. */
  private drawOverlay(index: number): void {
    const objects = this.results.get(index) ?? [];
    this.stage.showMasks(objects.map((object) => ({ rle: object.mask, color: object.id })));
    this.stage.showMarks(this.clicks.get(`${this.selected ?? 'new'}@${index}`) ?? [], []);
  }

  private select(id: number | null): void {
    this.selected = id;
    this.newObject.setAttribute('aria-pressed', String(id === null));
    for (const item of this.objectList.querySelectorAll<HTMLElement>('li')) {
      item.classList.toggle('selected', Number(item.dataset.id) === id);
    }
    if (this.session !== null && this.shown >= 0) this.drawOverlay(this.shown);
  }

  /** Every object the session has answered with, with its concept's text. */
  private renderObjects(): void {
    const ids = new Map<number, number | undefined>();
    for (const objects of this.results.values()) {
      for (const object of objects) ids.set(object.id, object.concept_id);
    }
    const items = [...ids.entries()]
      .sort(([a], [b]) => a - b)
      .map(([id, concept]) => {
        const item = document.createElement('li');
        item.dataset.id = String(id);
        item.classList.toggle('selected', id === this.selected);
        const pick = document.createElement('button');
        pick.type = 'button';
        const swatch = document.createElement('span');
        swatch.className = 'swatch';
        swatch.style.background = cssColor(id);
        const label = concept === undefined ? '' : ` · ${this.concepts.get(concept) ?? ''}`;
        pick.append(swatch, `object ${id}${label}`);
        pick.addEventListener('click', () => this.select(id));
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.className = 'remove needs-session';
        remove.textContent = 'remove';
        remove.setAttribute('aria-label', `remove object ${id}`);
        remove.addEventListener('click', () => void this.removeObject(id));
        item.append(pick, remove);
        return item;
      });
    this.objectList.replaceChildren(...items);
  }

  private async run(label: string, action: (session: Session) => Promise<void>): Promise<void> {
    const session = this.session;
    if (session === null || this.busy) return;
    this.context.clearError();
    this.setBusy(true);
    this.setStatus(label);
    try {
      await action(session);
    } catch (error) {
      this.setStatus(isAbort(error) ? 'cancelled' : '');
      this.context.reportError(error);
    } finally {
      this.setBusy(false);
    }
  }

  private storePrompt(response: VideoPromptResponse): void {
    for (const concept of response.concepts ?? [])
      this.concepts.set(concept.concept_id, concept.text);
    this.results.set(
      response.frame_index,
      response.obj_id.map((id, i) => ({
        id,
        mask: response.masks[i],
        box: response.boxes[i],
        score: response.scores[i],
        present: response.present[i],
        ...(response.concept_ids === undefined ? {} : { concept_id: response.concept_ids[i] }),
      })),
    );
    for (const id of response.obj_id) this.nextObjectId = Math.max(this.nextObjectId, id + 1);
    this.renderObjects();
    this.drawOverlay(response.frame_index);
  }

  private click(point: [number, number], positive: boolean): Promise<void> {
    return this.run('adding the click…', async (session) => {
      const frame = this.shown;
      const id = this.selected ?? this.nextObjectId;
      const key = `${id}@${frame}`;
      const clicks = [
        ...(this.clicks.get(this.selected === null ? `new@${frame}` : key) ?? []),
        { point, positive },
      ];
      const response = await this.context.client().addPrompt(session.id, {
        frame_index: frame,
        obj_id: id,
        prompts: [
          {
            type: 'point',
            points: clicks.map((click) => click.point),
            point_labels: clicks.map((click) => (click.positive ? 1 : 0)),
          },
        ],
      });
      this.clicks.set(key, clicks);
      this.storePrompt(response);
      this.select(id);
      this.setStatus(`object ${id} on frame ${frame + 1}: propagate to track it`);
    });
  }

  private addConcept(): Promise<void> {
    const input = byId<HTMLInputElement>('video-text');
    const text = input.value.trim();
    if (text === '') return Promise.resolve();
    return this.run(`finding "${text}"…`, async (session) => {
      const frame = this.shown;
      const response = await this.context.client().addPrompt(session.id, {
        frame_index: frame,
        obj_id: null,
        prompts: [{ type: 'text', text }],
      });
      this.storePrompt(response);
      this.setStatus(
        `"${text}": ${response.obj_id.length} object(s) on frame ${frame + 1}; propagate to track`,
      );
    });
  }

  private propagate(direction: Direction): Promise<void> {
    return this.run(`propagating ${direction}…`, async (session) => {
      const controller = new AbortController();
      this.propagation = controller;
      this.cancel.disabled = false;
      let received = 0;
      try {
        const frames = this.context
          .client()
          .propagateStream(
            session.id,
            { direction, start_frame_index: this.shown },
            { signal: controller.signal },
          );
        for await (const frame of frames) {
          received++;
          this.results.set(frame.frame_index, frame.objects);
          if (frame.objects.some((object) => !this.hasObject(object.id))) this.renderObjects();
          this.setStatus(`propagating ${direction}: ${received} frame(s)`);
          this.showFrame(frame.frame_index);
        }
        this.setStatus(`propagated ${direction}: ${received} frame(s)`);
      } finally {
        this.propagation = null;
      }
    });
  }

  private hasObject(id: number): boolean {
    return this.objectList.querySelector(`li[data-id="${id}"]`) !== null;
  }

  private removeObject(id: number): Promise<void> {
    return this.run(`removing object ${id}…`, async (session) => {
      await this.context.client().removeObject(session.id, id);
      for (const [frame, objects] of this.results) {
        this.results.set(
          frame,
          objects.filter((object) => object.id !== id),
        );
      }
      for (const key of [...this.clicks.keys()])
        if (key.startsWith(`${id}@`)) this.clicks.delete(key);
      if (this.selected === id) this.select(null);
      this.renderObjects();
      this.drawOverlay(this.shown);
      this.setStatus(`object ${id} removed`);
    });
  }

  private reset(): Promise<void> {
    return this.run('resetting…', async (session) => {
      const reset = await this.context.client().resetSession(session.id);
      this.results.clear();
      this.concepts.clear();
      this.clicks.clear();
      this.nextObjectId = 1;
      this.select(null);
      this.renderObjects();
      this.drawOverlay(this.shown);
      this.setStatus(`reset: ${reset.objects_cleared} object(s) cleared`);
    });
  }
}
