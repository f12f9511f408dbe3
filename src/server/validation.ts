/**
 * Request validation with ajv (JSON Schema 2020-12): strict schemas, first error only, and a
 * message that names the offending field as a JSON pointer (e.g. "/prompts/0/text").
 */
import Ajv2020, { type ErrorObject } from 'ajv/dist/2020';
import { ApiError } from './errors';
import type { JsonSchema } from './schemas';

/** Field names from the client are echoed in messages; keep them short. */
const MAX_ECHOED_NAME = 64;

export function createAjv(): Ajv2020 {
  return new Ajv2020({
    strict: true,
    allErrors: false,
    discriminator: true,
    // maxLength counts UTF-16 units in constant time; counting code points scans the string
    // (0.6 s of event loop for a 100 MB image). ajv calls this option deprecated and says so
    // through its logger, which strict mode leaves with nothing else to say: hence no logger.
    unicode: false,
    logger: false,
    coerceTypes: false,
    useDefaults: false,
  });
}

function echoName(name: string): string {
  const shown = name.length > MAX_ECHOED_NAME ? `${name.slice(0, MAX_ECHOED_NAME)}...` : name;
  return JSON.stringify(shown);
}

function escapePointerToken(token: string): string {
  return token.slice(0, MAX_ECHOED_NAME).replace(/~/g, '~0').replace(/\//g, '~1');
}

/** One ajv error -> "<JSON pointer of the field>: <what is wrong>". */
export function describeValidationError(error: ErrorObject): string {
  const at = error.instancePath;
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'required':
      return `${at}/${escapePointerToken(String(params.missingProperty))}: is required`;
    case 'additionalProperties':
      return `${at}/${escapePointerToken(String(params.additionalProperty))}: unknown field ${echoName(
        String(params.additionalProperty),
      )} is not allowed`;
    case 'discriminator':
      // params.error: "tag" (missing or not a string) or "mapping" (no schema for the value).
      return params.error === 'mapping'
        ? `${at}/${escapePointerToken(String(params.tag))}: unknown value ${echoName(
            String(params.tagValue),
          )}`
        : `${at}/${escapePointerToken(String(params.tag))}: ${error.message ?? 'is invalid'}`;
    case 'const':
      return `${at || '/'}: must be ${JSON.stringify(params.allowedValue)}`;
    case 'enum':
      return `${at || '/'}: must be one of ${JSON.stringify(params.allowedValues)}`;
    default:
      return `${at || '/'}: ${error.message ?? 'is invalid'}`;
  }
}

/** Compiles `schema` into a function that returns the typed value or throws 400. */
export function compileValidator<T>(ajv: Ajv2020, schema: JsonSchema): (value: unknown) => T {
  const validate = ajv.compile<T>(schema);
  return (value: unknown): T => {
    if (validate(value)) return value;
    const first = validate.errors?.[0];
    const detail = first === undefined ? 'request is invalid' : describeValidationError(first);
    throw new ApiError('invalid_request', `invalid request: ${detail}`);
  };
}
