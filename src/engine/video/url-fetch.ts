/**
 * video_url -> a local file, with the SSRF rules of SECURITY.md rows 1-5.
 *
 * - http and https only; credentials in the URL, backslashes, spaces and control characters
 *   are refused before parsing. The WHATWG parser then normalizes the host (decimal, hex,
 *   octal and short IPv4 forms, a trailing dot) so the address checked is the one used.
 * - The address is checked when the socket connects: an IP literal before the request, a name
 *   inside the `lookup` that the socket itself uses (so a DNS answer cannot change between
 *   check and connect), and the connected socket's peer once more. Only global unicast
 *   addresses pass (ipaddr.js ranges); an IPv4 address embedded in IPv6 (mapped ::ffff:0:0/96,
 *   compatible ::/96, NAT64 64:ff9b::/96) is judged as that IPv4 address. Exact addresses of
 *   `allowedAddresses` ("ip" or "ip:port") are exempt, for test fixtures and trusted hosts.
 * - Redirects are followed by hand, each hop checked like the first, at most `maxRedirects`;
 *   a hop from https to http is refused.
 * - The body streams to the file with a byte cap (a Content-Length over it is refused before
 *   reading), under one deadline for the whole download. On any failure the partial file is
 *   removed. Messages never name a resolved address.
 */
import dns from 'node:dns';
import { open, unlink } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ipaddr from 'ipaddr.js';
import { VideoInputError } from './errors';

export interface DownloadLimits {
  /** Largest body accepted, bytes (MAX_UPLOAD_SIZE_MB). */
  maxBytes: number;
  /** The whole download, redirects included, ms (VIDEO_URL_TIMEOUT_SECONDS). */
  timeoutMs: number;
  /** Redirects followed (VIDEO_URL_MAX_REDIRECTS); one more is refused. */
  maxRedirects: number;
  /** "ip" or "ip:port" ("[v6]:port") exempt from the address rules (VIDEO_URL_ALLOWED_ADDRESSES). */
  allowedAddresses: readonly string[];
}

export interface DownloadOptions {
  /** Aborts the download (the caller went away); the rejection is the signal's reason. */
  signal?: AbortSignal;
  /** Certificate authorities trusted for https instead of the system's (private CAs, tests). */
  ca?: string | Buffer | (string | Buffer)[];
}

export interface DownloadResult {
  /** Bytes written to the file. */
  bytes: number;
  /** Redirects followed. */
  redirects: number;
  /** The final response's Content-Type, if any. */
  contentType: string | undefined;
}

const MAX_URL_LENGTH = 8192;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const SCHEME = /^([a-zA-Z][a-zA-Z0-9+.-]{0,31}):/;
/**
 * Spaces, C0 controls, DEL and backslashes: the WHATWG parser strips or rewrites them, other
 * parsers do not; a URL that parsers may read differently is refused outright.
 */
function hasAmbiguousCharacters(raw: string): boolean {
  for (let i = 0; i < raw.length; i += 1) {
    const code = raw.charCodeAt(i);
    if (code <= 0x20 || code === 0x7f || code === 0x5c) return true;
  }
  return false;
}

function notAllowed(message: string): VideoInputError {
  return new VideoInputError('url_not_allowed', message);
}

/**
 * Parses a video URL (or a redirect's Location against `base`) and applies the rules that do
 * not need the network: scheme, credentials, ambiguous characters.
 */
export function parseVideoUrl(raw: string, base?: URL): URL {
  if (raw.length > MAX_URL_LENGTH) {
    throw notAllowed(`the URL is longer than ${MAX_URL_LENGTH} characters`);
  }
  const scheme = SCHEME.exec(raw)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') {
    throw new VideoInputError(
      'unsupported_scheme',
      `the ${scheme}: scheme is not supported; video_url must be an http or https URL`,
    );
  }
  if (scheme === undefined && base === undefined) {
    throw notAllowed('video_url must be an absolute http or https URL');
  }
  if (hasAmbiguousCharacters(raw)) {
    throw notAllowed('the URL must not contain spaces, control characters or backslashes');
  }
  let url: URL;
  try {
    url = new URL(raw, base);
  } catch {
    throw notAllowed('the URL is not valid');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new VideoInputError('unsupported_scheme', 'video_url must be an http or https URL');
  }
  if (url.username !== '' || url.password !== '') {
    throw notAllowed('credentials (user:password@) in the URL are not allowed');
  }
  if (url.hostname === '') throw notAllowed('the URL has no host');
  return url;
}

function embeddedIPv4(address: ipaddr.IPv6): ipaddr.IPv4 {
  const [high = 0, low = 0] = address.parts.slice(6);
  return new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);
}

function isGlobal(address: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  if (address.kind() === 'ipv4') return address.range() === 'unicast';
  const v6 = address as ipaddr.IPv6;
  const range = v6.range();
  if (range === 'unspecified' || range === 'loopback') return false;
  if (range === 'ipv4Mapped') return isGlobal(v6.toIPv4Address());
  const parts = v6.parts;
  // IPv4-compatible ::a.b.c.d (ipaddr.js calls it unicast) and NAT64 64:ff9b::a.b.c.d.
  if (parts.slice(0, 6).every((part) => part === 0)) return isGlobal(embeddedIPv4(v6));
  if (parts[0] === 0x64 && parts[1] === 0xff9b && parts.slice(2, 6).every((part) => part === 0)) {
    return isGlobal(embeddedIPv4(v6));
  }
  return range === 'unicast';
}

/**
 * True for a global unicast address: not loopback, private (RFC 1918), CGNAT (100.64/10),
 * link-local (169.254/16 with the cloud metadata address, fe80::/10), unique-local (fc00::/7,
 * fd00:ec2::254), unspecified, multicast, broadcast, reserved, documentation, 6to4, Teredo,
 * nor IPv6 forms of any of those IPv4 addresses.
 */
export function isGlobalAddress(address: string): boolean {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.parse(address);
  } catch {
    return false;
  }
  return isGlobal(parsed);
}

interface Exemption {
  address: string;
  port: number | null;
}

function normalizeAddress(address: string): string | null {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (net.isIP(bare) === 0) return null;
  const parsed = ipaddr.parse(bare);
  return parsed.kind() === 'ipv6'
    ? (parsed as ipaddr.IPv6).toNormalizedString()
    : parsed.toString();
}

function parseExemption(entry: string): Exemption {
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(entry);
  const withPort = /^([^:]+):(\d{1,5})$/.exec(entry);
  const [host, port] =
    bracketed !== null
      ? [bracketed[1] ?? '', bracketed[2]]
      : net.isIP(entry) !== 0
        ? [entry, undefined]
        : withPort !== null
          ? [withPort[1] ?? '', withPort[2]]
          : ['', undefined];
  const address = normalizeAddress(host);
  const portNumber = port === undefined ? null : Number(port);
  if (address === null || (portNumber !== null && portNumber > 65535)) {
    throw new Error(`allowed video URL address "${entry}" is not "ip" or "ip:port"`);
  }
  return { address, port: portNumber };
}

/** Which peers a download may connect to. */
export class AddressPolicy {
  private readonly exemptions: readonly Exemption[];

  constructor(allowedAddresses: readonly string[]) {
    this.exemptions = allowedAddresses.map(parseExemption);
  }

  allows(address: string, port: number): boolean {
    const normalized = normalizeAddress(address);
    if (normalized === null) return false;
    const exempt = this.exemptions.some(
      (entry) => entry.address === normalized && (entry.port === null || entry.port === port),
    );
    return exempt || isGlobalAddress(normalized);
  }
}

function refusedAddress(): VideoInputError {
  return notAllowed(
    'the URL points at an address that is not allowed (private, local or reserved)',
  );
}

/** dns.lookup that refuses the whole answer if any address in it is not allowed. */
function checkedLookup(policy: AddressPolicy, port: number): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(
      // "example.com." is the fully qualified "example.com"; getaddrinfo may not know it.
      hostname.endsWith('.') ? hostname.slice(0, -1) : hostname,
      { family: options.family, hints: options.hints, all: true },
      (error, addresses) => {
        if (error !== null) {
          callback(error, '', 0);
          return;
        }
        const first = addresses[0];
        if (first === undefined || addresses.some((entry) => !policy.allows(entry.address, port))) {
          callback(refusedAddress() as unknown as NodeJS.ErrnoException, '', 0);
          return;
        }
        if (options.all === true) callback(null, addresses);
        else callback(null, first.address, first.family);
      },
    );
  };
}

function portOf(url: URL): number {
  if (url.port !== '') return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

function hostOf(url: URL): string {
  const host = url.hostname;
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** Sends one GET to `url` and resolves with the response head (body unread). */
function requestOnce(
  url: URL,
  policy: AddressPolicy,
  signal: AbortSignal,
  ca: DownloadOptions['ca'],
): Promise<IncomingMessage> {
  const port = portOf(url);
  const host = hostOf(url);
  if (net.isIP(host) !== 0 && !policy.allows(host, port)) return Promise.reject(refusedAddress());
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = {
      method: 'GET',
      agent: false,
      lookup: checkedLookup(policy, port),
      signal,
      headers: {
        'user-agent': 'sam3-server',
        accept: 'video/*, application/octet-stream;q=0.9, */*;q=0.5',
        'accept-encoding': 'identity',
      },
      ...(ca === undefined ? {} : { ca }),
    };
    const request =
      url.protocol === 'https:' ? https.request(url, options) : http.request(url, options);
    request.on('socket', (socket) => {
      socket.once('connect', () => {
        // The lookup checked the address; the peer is checked too, whatever connected it.
        const peer = socket.remoteAddress;
        if (peer === undefined || !policy.allows(peer, socket.remotePort ?? port)) {
          request.destroy(refusedAddress());
        }
      });
    });
    request.on('response', resolve);
    request.on('error', reject);
    request.end();
  });
}

/** Counts bytes through; fails once more than `maxBytes` have passed. */
class ByteCap extends Transform {
  bytes = 0;
  constructor(private readonly maxBytes: number) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) done(tooLarge(this.maxBytes));
    else done(null, chunk);
  }
}

function tooLarge(maxBytes: number): VideoInputError {
  return new VideoInputError(
    'payload_too_large',
    `the video at video_url is larger than ${maxBytes} bytes (MAX_UPLOAD_SIZE_MB)`,
  );
}

/** A network failure -> download_failed, naming the error kind but never an address. */
function networkFailure(error: unknown): Error {
  if (error instanceof VideoInputError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? '';
  let message = 'the video could not be downloaded';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME') {
    message = 'the video URL host name could not be resolved';
  } else if (code === 'ECONNREFUSED') {
    message = 'the video host refused the connection';
  } else if (/CERT|TLS|SSL|SELF_SIGNED/.test(code)) {
    message = "the video host's TLS certificate was not accepted";
  } else if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
    message = 'the video host closed the connection before the video was complete';
  } else if (/^[A-Z][A-Z_]{1,40}$/.test(code)) {
    message = `the video could not be downloaded (${code})`;
  }
  return new VideoInputError('download_failed', message, { cause: error });
}

/**
 * Downloads `url` into `destFile` (created, mode 0600; it must not exist). Throws
 * VideoInputError: unsupported_scheme, url_not_allowed, payload_too_large, download_timeout,
 * download_failed. On failure `destFile` does not exist.
 */
export async function downloadVideo(
  url: string,
  destFile: string,
  limits: DownloadLimits,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const policy = new AddressPolicy(limits.allowedAddresses);
  let current = parseVideoUrl(url);
  const controller = new AbortController();
  const timeoutSeconds = limits.timeoutMs / 1000;
  const timer = setTimeout(
    () =>
      controller.abort(
        new VideoInputError(
          'download_timeout',
          `the video download did not finish within ${timeoutSeconds} s`,
        ),
      ),
    limits.timeoutMs,
  );
  const external = options.signal;
  const forward = (): void => controller.abort(external?.reason);
  if (external?.aborted) forward();
  else external?.addEventListener('abort', forward, { once: true });
  let created = false;
  try {
    for (let redirects = 0; ; redirects += 1) {
      const response = await requestOnce(current, policy, controller.signal, options.ca);
      const status = response.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status)) {
        response.destroy();
        if (redirects >= limits.maxRedirects) {
          throw notAllowed(`the URL redirects more than ${limits.maxRedirects} times`);
        }
        const location = response.headers.location;
        if (location === undefined || location === '') {
          throw new VideoInputError(
            'download_failed',
            `the video host redirected (HTTP ${status}) without a Location`,
          );
        }
        const next = parseVideoUrl(location, current);
        if (current.protocol === 'https:' && next.protocol === 'http:') {
          throw notAllowed('a redirect from https to http is not followed');
        }
        current = next;
        continue;
      }
      if (status !== 200) {
        response.destroy();
        throw new VideoInputError('download_failed', `the video host answered HTTP ${status}`);
      }
      const declared = Number(response.headers['content-length'] ?? Number.NaN);
      if (Number.isFinite(declared) && declared > limits.maxBytes) {
        response.destroy();
        throw tooLarge(limits.maxBytes);
      }
      const file = await open(destFile, 'wx', 0o600).catch((error: unknown) => {
        response.destroy();
        throw error;
      });
      created = true;
      const cap = new ByteCap(limits.maxBytes);
      await pipeline(response, cap, file.createWriteStream(), { signal: controller.signal });
      return {
        bytes: cap.bytes,
        redirects,
        contentType: response.headers['content-type'],
      };
    }
  } catch (error) {
    if (created) await unlink(destFile).catch(() => undefined);
    if (controller.signal.aborted) throw controller.signal.reason;
    throw networkFailure(error);
  } finally {
    clearTimeout(timer);
    external?.removeEventListener('abort', forward);
  }
}
