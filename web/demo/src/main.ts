/**
 * The demo page (/demo): segment an image by text, clicks or boxes, or track objects through
 * a video, with the server's own API through the TypeScript client. Nothing is stored: the API
 * key lives in the page's memory only (never in the URL or in storage).
 */
import { Sam3Client } from '../../../clients/typescript/src/index';
import { byId, describeError, isAbort, type DemoContext } from './context';
import { ImageView } from './image-view';
import { VideoView } from './video-view';

async function showServer(context: DemoContext): Promise<void> {
  const status = byId<HTMLElement>('server-status');
  try {
    const info = await context.client().info();
    status.textContent = `${info.name} ${info.version} · model ${info.model?.id ?? 'none'} · ${info.status}`;
    const banner = byId<HTMLElement>('random-weights-banner');
    banner.hidden = !info.random_weights;
    if (info.random_weights) {
      banner.textContent =
        info.warning ?? 'This server runs a random-weight model: its masks are meaningless.';
    }
  } catch (error) {
    status.textContent = 'server unreachable';
    context.reportError(error);
  }
}

function main(): void {
  const apiKey = byId<HTMLInputElement>('api-key');
  const errorBox = byId<HTMLElement>('error');
  const context: DemoContext = {
    client: () =>
      new Sam3Client({
        baseUrl: window.location.origin,
        apiKey: apiKey.value === '' ? undefined : apiKey.value,
      }),
    reportError(error) {
      if (isAbort(error)) return;
      errorBox.textContent = describeError(error);
      errorBox.hidden = false;
    },
    clearError() {
      errorBox.hidden = true;
      errorBox.textContent = '';
    },
  };
  byId<HTMLFormElement>('api-key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    context.clearError();
  });

  const views = { image: new ImageView(context), video: new VideoView(context) };
  for (const button of document.querySelectorAll<HTMLButtonElement>('nav button[data-mode]')) {
    button.addEventListener('click', () => {
      const mode = button.dataset.mode;
      for (const other of document.querySelectorAll<HTMLButtonElement>('nav button[data-mode]')) {
        other.setAttribute('aria-pressed', String(other === button));
      }
      byId('image-mode').hidden = mode !== 'image';
      byId('video-mode').hidden = mode !== 'video';
    });
  }
  window.addEventListener('pagehide', () => views.video.dispose());
  void showServer(context);
}

document.addEventListener('DOMContentLoaded', main);
