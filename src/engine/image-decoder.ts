/**
 * Untrusted base64 image -> raw 8-bit sRGB pixels, with sharp (libvips).
 *
 * Only JPEG, PNG and WebP are accepted; the format is decided from the bytes themselves,
 * before sharp sees them, so other decoders (SVG, TIFF, ...) never parse client data. The
 * pixel count is checked against the header before any pixel is decoded (pixel-flood guard),
 * and sharp's own limitInputPixels backs that check up.
 */
import sharp, { type Metadata, type OutputInfo, type SharpOptions } from 'sharp';
import { MAX_IMAGE_SIDE } from './input-limits';

export type ImageErrorCode =
  | 'invalid_base64' // not strict standard base64 (or a malformed data: URL)
  | 'invalid_image' // not an image we recognise, or corrupt/truncated data
  | 'unsupported_media' // a recognised format other than JPEG/PNG/WebP
  | 'image_too_large'; // more pixels than the configured limit

/** A client-side problem with the image; the message is safe to show to the client. */
export class ImageDecodeError extends Error {
  override readonly name = 'ImageDecodeError';
  constructor(
    readonly code: ImageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Row-major RGB, 3 bytes per pixel, width x height after EXIF orientation. */
export interface DecodedImage {
  data: Buffer;
  width: number;
  height: number;
}

export interface DecodeLimits {
  /** Largest width x height accepted, pixels. */
  maxPixels: number;
}

export type AcceptedFormat = 'jpeg' | 'png' | 'webp';

// `data:<media type>[;params];base64,` (RFC 2397); only the base64 form carries binary data.
const DATA_URL_PREFIX = /^data:([^,;]*)((?:;[^,;]*)*),/i;
// Standard alphabet, canonical padding, no whitespace. Linear-time: one class, anchored.
const STRICT_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function stripDataUrl(input: string): string {
  const match = DATA_URL_PREFIX.exec(input.slice(0, 256));
  if (match === null) return input;
  const mediaType = (match[1] ?? '').toLowerCase();
  const params = (match[2] ?? '').toLowerCase().split(';');
  if (!params.includes('base64')) {
    throw new ImageDecodeError('invalid_base64', 'a data: URL image must be base64 (;base64,)');
  }
  if (mediaType !== '' && !mediaType.startsWith('image/')) {
    throw new ImageDecodeError(
      'unsupported_media',
      `data: URL media type ${mediaType.slice(0, 64)} is not an image`,
    );
  }
  return input.slice(match[0].length);
}

/** Strict base64 -> bytes. Buffer.from alone silently skips invalid characters. */
export function decodeBase64Strict(input: string): Buffer {
  const body = stripDataUrl(input);
  if (body.length === 0) throw new ImageDecodeError('invalid_base64', 'image is empty');
  if (body.length % 4 !== 0 || !STRICT_BASE64.test(body)) {
    throw new ImageDecodeError(
      'invalid_base64',
      'image is not valid base64 (standard alphabet, padded, no whitespace)',
    );
  }
  return Buffer.from(body, 'base64');
}

function startsWith(bytes: Buffer, signature: readonly number[], offset = 0): boolean {
  if (bytes.length < offset + signature.length) return false;
  return signature.every((byte, index) => bytes[offset + index] === byte);
}

function ascii(text: string): number[] {
  return Array.from(text, (char) => char.charCodeAt(0));
}

/** Formats recognised by their signature but refused (415 rather than "undecodable"). */
const REFUSED_SIGNATURES: readonly { name: string; signature: number[]; offset?: number }[] = [
  { name: 'GIF', signature: ascii('GIF8') },
  { name: 'TIFF', signature: ascii('II*\0') },
  { name: 'TIFF', signature: ascii('MM\0*') },
  { name: 'BMP', signature: ascii('BM') },
  { name: 'PDF', signature: ascii('%PDF') },
  { name: 'HEIF/AVIF', signature: ascii('ftyp'), offset: 4 },
  { name: 'JPEG 2000', signature: [0, 0, 0, 0x0c, 0x6a, 0x50, 0x20, 0x20] },
  { name: 'JPEG XL', signature: [0xff, 0x0a] },
  { name: 'JPEG XL', signature: [0, 0, 0, 0x0c, 0x4a, 0x58, 0x4c, 0x20] },
];

/** The format of `bytes` from its signature; throws for anything but JPEG/PNG/WebP. */
export function sniffImageFormat(bytes: Buffer): AcceptedFormat {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return 'webp';
  // SVG and other XML: '<' after an optional UTF-8 byte order mark and whitespace.
  const head = bytes
    .subarray(0, 256)
    .toString('utf8')
    .replace(/^\uFEFF/, '')
    .trimStart();
  const refused = head.startsWith('<')
    ? 'SVG/XML'
    : REFUSED_SIGNATURES.find((candidate) =>
        startsWith(bytes, candidate.signature, candidate.offset),
      )?.name;
  if (refused !== undefined) {
    throw new ImageDecodeError(
      'unsupported_media',
      `${refused} images are not supported; send JPEG, PNG or WebP`,
    );
  }
  throw new ImageDecodeError('invalid_image', 'image data is not a JPEG, PNG or WebP image');
}

function isPixelLimitError(error: unknown): boolean {
  return error instanceof Error && /pixel limit/i.test(error.message);
}

function tooLarge(width: number, height: number, limits: DecodeLimits): ImageDecodeError {
  return new ImageDecodeError(
    'image_too_large',
    `image is ${width}x${height} pixels; at most ${limits.maxPixels} pixels are accepted`,
  );
}

/**
 * Image bytes -> RGB uint8: EXIF orientation applied, alpha removed, any depth (16-bit),
 * greyscale or CMYK converted to 8-bit sRGB.
 */
export async function decodeImageBytes(bytes: Buffer, limits: DecodeLimits): Promise<DecodedImage> {
  sniffImageFormat(bytes);
  const options: SharpOptions = {
    limitInputPixels: limits.maxPixels,
    failOn: 'warning',
    autoOrient: true,
  };

  let metadata: Metadata;
  try {
    // Header only: no pixel is decoded here, so the size can be reported before refusing it.
    metadata = await sharp(bytes, { ...options, limitInputPixels: false }).metadata();
  } catch (error) {
    throw new ImageDecodeError('invalid_image', 'image header could not be read', {
      cause: error,
    });
  }
  // Decided from the header alone, before a single pixel is decoded.
  if (metadata.width * metadata.height > limits.maxPixels) {
    throw tooLarge(metadata.width, metadata.height, limits);
  }
  if (metadata.width > MAX_IMAGE_SIDE || metadata.height > MAX_IMAGE_SIDE) {
    throw new ImageDecodeError(
      'image_too_large',
      `image is ${metadata.width}x${metadata.height}; each side must be at most ` +
        `${MAX_IMAGE_SIDE} pixels`,
    );
  }

  let decoded: { data: Buffer; info: OutputInfo };
  try {
    decoded = await sharp(bytes, options)
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (error) {
    if (isPixelLimitError(error)) throw tooLarge(metadata.width, metadata.height, limits);
    throw new ImageDecodeError('invalid_image', 'image data is corrupt or truncated', {
      cause: error,
    });
  }
  const { data, info } = decoded;
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    throw new Error(`image decoder produced ${info.channels} channels of ${data.length} bytes`);
  }
  return { data, width: info.width, height: info.height };
}

/** base64 (optionally a data:image/...;base64, URL) -> RGB uint8. */
export async function decodeImage(input: string, limits: DecodeLimits): Promise<DecodedImage> {
  return decodeImageBytes(decodeBase64Strict(input), limits);
}
