/** Base64 with web-platform APIs only (btoa, TextEncoder): the same code runs in a browser. */

const CHUNK = 0x8000;

/** Standard base64 (padded) of `bytes`, e.g. an image file for SegmentRequest.image. */
export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let start = 0; start < bytes.length; start += CHUNK) {
    binary += String.fromCharCode(...bytes.subarray(start, start + CHUNK));
  }
  return btoa(binary);
}

/** base64url (RFC 4648 section 5, unpadded) of the UTF-8 bytes of `text`. */
export function base64UrlOfText(text: string): string {
  return toBase64(new TextEncoder().encode(text))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
}
