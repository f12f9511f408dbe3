/**
 * Reads and validates `<bundle>/manifest.json` (docs/bundle-format.md): format version 1
 * (images), 2 (images plus the video tracker modules, docs/video-internals.md section 1), 3
 * (plus concept tracking, docs/video-concepts.md) or 4 (the vision encoder split into its
 * trunk and two necks).
 *
 * Only the fields TypeScript uses are checked here (model identity, resolution, text
 * settings); native/core validates the module signatures when it loads the bundle. Other
 * fields are allowed so that the format can grow without breaking the server.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Ajv2020, { type ErrorObject, type JSONSchemaType } from 'ajv/dist/2020';

export const MANIFEST_FILE = 'manifest.json';
/** Format versions this server reads; whether video is served is the engine's call (info). */
export const SUPPORTED_FORMAT_VERSIONS = [1, 2, 3, 4];

export interface BundleManifest {
  format: 'sam3-bundle';
  format_version: number;
  model: {
    /** Hub id, local directory name, or "tiny-random". */
    id: string;
    /** True for --tiny-random bundles: everything user-facing must say so. */
    random_weights: boolean;
    seed?: number | null;
    /** "sha256:<hex>" over the state dict. */
    checksum: string;
  };
  dtype: string;
  /** Square model input side R, pixels. */
  resolution: number;
  /** Detector queries Q: the most instances one concept prompt can return. */
  num_queries: number;
  text: {
    /** Tokens per prompt L (CLIP: 32 for SAM3). */
    context_length: number;
    /** File name of the BPE vocabulary inside the bundle directory. */
    vocab_file: string;
    vocab_size: number;
    bos_id: number;
    eos_id: number;
    pad_id: number;
  };
  /** Concept tracking (format 3, docs/video-concepts.md): the thresholds TypeScript uses. */
  concept?: {
    /** Frames a propagation holds outputs back by default (hotstart). */
    hotstart_delay: number;
    max_num_objects: number;
  };
}

/** The manifest is missing, unreadable, not JSON, or does not match the format. */
export class BundleManifestError extends Error {
  override readonly name = 'BundleManifestError';
}

const nonNegativeInteger = { type: 'integer', minimum: 0 } as const;

const manifestSchema: JSONSchemaType<BundleManifest> = {
  type: 'object',
  required: ['format', 'format_version', 'model', 'dtype', 'resolution', 'num_queries', 'text'],
  properties: {
    format: { type: 'string', const: 'sam3-bundle' },
    format_version: { type: 'integer', enum: SUPPORTED_FORMAT_VERSIONS },
    model: {
      type: 'object',
      required: ['id', 'random_weights', 'checksum'],
      properties: {
        id: { type: 'string', minLength: 1, maxLength: 512 },
        random_weights: { type: 'boolean' },
        seed: { type: 'integer', nullable: true },
        checksum: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
      },
    },
    dtype: { type: 'string', enum: ['float32', 'float16', 'bfloat16'] },
    resolution: { type: 'integer', minimum: 1 },
    num_queries: { type: 'integer', minimum: 1 },
    text: {
      type: 'object',
      required: ['context_length', 'vocab_file', 'vocab_size', 'bos_id', 'eos_id', 'pad_id'],
      properties: {
        context_length: { type: 'integer', minimum: 2 },
        // A plain file name: the vocabulary must live inside the bundle directory.
        vocab_file: { type: 'string', pattern: '^(?!\\.\\.?$)[^/\\\\]{1,255}$' },
        vocab_size: { type: 'integer', minimum: 1 },
        bos_id: nonNegativeInteger,
        eos_id: nonNegativeInteger,
        pad_id: nonNegativeInteger,
      },
    },
    concept: {
      type: 'object',
      nullable: true,
      required: ['hotstart_delay', 'max_num_objects'],
      properties: {
        hotstart_delay: nonNegativeInteger,
        max_num_objects: nonNegativeInteger,
      },
    },
  },
};

const ajv = new Ajv2020({ allErrors: false, strict: true });
const validateManifest = ajv.compile(manifestSchema);

function describe(error: ErrorObject): string {
  let pointer = error.instancePath;
  let reason = error.message ?? 'is invalid';
  if (error.keyword === 'required') {
    pointer += `/${(error.params as { missingProperty: string }).missingProperty}`;
    reason = 'is missing';
  }
  const field = pointer.slice(1).replace(/\//g, '.') || '(top level)';
  return `field "${field}" ${reason}`;
}

/** Parses and validates manifest text; `file` names the source in error messages. */
export function parseBundleManifest(text: string, file: string): BundleManifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new BundleManifestError(`${file}: not valid JSON (${(error as Error).message})`);
  }
  if (!validateManifest(parsed)) {
    const first = validateManifest.errors?.[0];
    throw new BundleManifestError(
      `${file}: ${first === undefined ? 'invalid manifest' : describe(first)}`,
    );
  }
  return parsed;
}

/** Reads `<bundleDir>/manifest.json`. */
export async function readBundleManifest(bundleDir: string): Promise<BundleManifest> {
  const file = path.join(bundleDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'not found (is SAM3_CHECKPOINT a model bundle?)' : code;
    throw new BundleManifestError(`${file}: ${reason ?? 'unreadable'}`);
  }
  return parseBundleManifest(text, file);
}

/** Absolute path of the bundle's BPE vocabulary. */
export function bundleVocabPath(bundleDir: string, manifest: BundleManifest): string {
  return path.join(bundleDir, manifest.text.vocab_file);
}
