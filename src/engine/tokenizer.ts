/**
 * CLIP byte-level BPE tokenizer with exact id parity to transformers' CLIPTokenizer
 * (the `tokenizers`-backed one), read from open_clip's `bpe_simple_vocab_16e6.txt.gz`.
 *
 * The pipeline mirrors the Rust tokenizer built by transformers/models/clip/tokenization_clip.py:
 *   1. special tokens "<|startoftext|>" / "<|endoftext|>" are cut out of the raw text
 *      (added tokens with normalized=False: case-sensitive, matched before normalization);
 *   2. each remaining segment is normalized: NFC, every whitespace run -> " ", lowercase;
 *   3. split on the CLIP regex, keeping the matches (whitespace is dropped);
 *   4. each piece is split again by the ByteLevel pre-tokenizer's GPT-2 regex, mapped to
 *      UTF-8 bytes, and merged by BPE with "</w>" appended to the last symbol;
 *   5. truncated to contextLength - 2 ids, wrapped in bos/eos, right-padded with pad = eos.
 */
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';

const gunzipAsync = promisify(gunzip);

const BOS_TOKEN = '<|startoftext|>';
const EOS_TOKEN = '<|endoftext|>';
const END_OF_WORD_SUFFIX = '</w>';
/** open_clip: `merges = lines[1 : 49152 - 256 - 2 + 1]`, i.e. 48894 merges after the header. */
const MERGE_COUNT = 49152 - 256 - 2;
const BPE_CACHE_CAPACITY = 10_000;
/** Pieces longer than this are not cached, so one giant word cannot pin memory. */
const BPE_CACHE_MAX_PIECE_LENGTH = 64;

/**
 * Letters new in Unicode 17 (mostly CJK Extension J). Node 20.20's ICU (Unicode 17) has them
 * as \p{L}; the Oniguruma inside tokenizers 0.23 (Unicode 16) has them unassigned, so the
 * reference puts them in the "other" class. Excluding them from letters keeps parity on every
 * code point (checked by sweeping all of them against the reference); on a runtime whose
 * Unicode predates 17 they are unassigned anyway and this changes nothing. Lowercasing is not
 * affected: Rust's char tables are Unicode 17 too, like ICU's.
 */
const UNICODE_17_LETTERS = String.raw`[\u088f\u0c5c\u0cdc\ua7ce-\ua7cf\ua7f1\u{10940}-\u{10959}\u{10ec5}-\u{10ec7}\u{11db0}-\u{11ddb}\u{16ea0}-\u{16eb8}\u{16ebb}-\u{16ed3}\u{16ff2}-\u{16ff3}\u{187f8}-\u{187ff}\u{18d09}-\u{18d1e}\u{18d80}-\u{18df2}\u{1e6c0}-\u{1e6de}\u{1e6e0}-\u{1e6e2}\u{1e6e4}-\u{1e6e5}\u{1e6e7}-\u{1e6ed}\u{1e6f0}-\u{1e6f4}\u{1e6fe}-\u{1e6ff}\u{2b73a}-\u{2b73f}\u{2cea2}-\u{2cead}\u{323b0}-\u{33479}]`;
/**
 * Character classes of the Rust patterns, for the `v` regex flag. Oniguruma's `\s` is Unicode
 * White_Space (it includes U+0085, excludes U+FEFF), which JavaScript's `\s` is not.
 */
const LETTER = String.raw`[\p{L}--${UNICODE_17_LETTERS}]`;
const NUMBER = String.raw`[\p{N}--${UNICODE_17_LETTERS}]`;
const OTHER = String.raw`[[^\p{White_Space}\p{L}\p{N}]${UNICODE_17_LETTERS}]`;
const WHITESPACE = String.raw`\p{White_Space}`;

const SPECIAL_TOKEN_PATTERN = /<\|startoftext\|>|<\|endoftext\|>/g;
const WHITESPACE_RUN_PATTERN = /\p{White_Space}+/gu;
/** The Split pre-tokenizer pattern of CLIPTokenizer (case-sensitive: input is lowercased). */
const CLIP_PIECE_PATTERN = new RegExp(
  String.raw`<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|${LETTER}+|${NUMBER}|${OTHER}+`,
  'gv',
);
/**
 * The ByteLevel pre-tokenizer's own split (use_regex=true). On CLIP pieces it only changes a
 * normalized "<|startoftext|>" / "<|endoftext|>" (from e.g. "<|ENDOFTEXT|>"): "<|", word, "|>".
 */
const BYTE_LEVEL_PIECE_PATTERN = new RegExp(
  String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?${LETTER}+| ?${NUMBER}+| ?${OTHER}+|${WHITESPACE}+(?!\P{White_Space})|${WHITESPACE}+`,
  'gv',
);
const CAPITAL_SIGMA = '\u03a3';
const LONE_SURROGATE_PATTERN = /\p{Cs}/gu;

/** One BPE merge: applying it to the pair (left, right) yields mergedId; lower rank first. */
interface MergeRule {
  rank: number;
  mergedId: number;
}

export interface TokenizedText {
  /** Exactly contextLength token ids: bos, content, eos, then pad. */
  ids: number[];
  /** 1 for bos, content and eos; 0 for padding. */
  mask: number[];
}

export interface TokenizedBatch {
  /** Row-major [batch, contextLength] token ids. */
  ids: Int32Array;
  /** Row-major [batch, contextLength] attention mask (1 = token, 0 = padding). */
  mask: Int32Array;
}

/**
 * GPT-2's reversible byte -> printable character table (open_clip's bytes_to_unicode), as
 * the byte order of the vocabulary: entry i is the byte whose character has vocabulary id i.
 */
function byteLevelAlphabet(): { bytesInVocabOrder: number[]; charOfByte: string[] } {
  const bytesInVocabOrder: number[] = [];
  const isPrintable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  for (let b = 0; b < 256; b++) if (isPrintable(b)) bytesInVocabOrder.push(b);
  const charOfByte: string[] = new Array<string>(256);
  for (const b of bytesInVocabOrder) charOfByte[b] = String.fromCharCode(b);
  let remapped = 0;
  for (let b = 0; b < 256; b++) {
    if (!isPrintable(b)) {
      bytesInVocabOrder.push(b);
      charOfByte[b] = String.fromCharCode(256 + remapped);
      remapped++;
    }
  }
  return { bytesInVocabOrder, charOfByte };
}

/**
 * Rust's `char::to_lowercase` applied code point by code point, as the tokenizers Lowercase
 * normalizer does. It differs from String.prototype.toLowerCase in the context-dependent
 * Final_Sigma rule (word-final "Σ" -> "ς"), which the Rust normalizer never applies.
 */
function lowercasePerCodePoint(text: string): string {
  if (!text.includes(CAPITAL_SIGMA)) return text.toLowerCase();
  let lowered = '';
  for (const ch of text) lowered += ch.toLowerCase();
  return lowered;
}

function normalizeSegment(segment: string): string {
  return lowercasePerCodePoint(segment.normalize('NFC').replace(WHITESPACE_RUN_PATTERN, ' '));
}

/** A binary min-heap of candidate merges ordered by (rank, position), as in tokenizers' Word. */
class MergeQueue {
  private readonly ranks: number[] = [];
  private readonly positions: number[] = [];
  private readonly mergedIds: number[] = [];

  get size(): number {
    return this.ranks.length;
  }

  push(rank: number, position: number, mergedId: number): void {
    this.ranks.push(rank);
    this.positions.push(position);
    this.mergedIds.push(mergedId);
    let i = this.ranks.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** Removes the smallest entry; returns its [position, mergedId]. Caller checks size first. */
  pop(): [number, number] {
    const top: [number, number] = [this.positions[0], this.mergedIds[0]];
    const last = this.ranks.length - 1;
    this.swap(0, last);
    this.ranks.pop();
    this.positions.pop();
    this.mergedIds.pop();
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < last && this.before(left, smallest)) smallest = left;
      if (right < last && this.before(right, smallest)) smallest = right;
      if (smallest === i) break;
      this.swap(i, smallest);
      i = smallest;
    }
    return top;
  }

  private before(a: number, b: number): boolean {
    return this.ranks[a] !== this.ranks[b]
      ? this.ranks[a] < this.ranks[b]
      : this.positions[a] < this.positions[b];
  }

  private swap(a: number, b: number): void {
    [this.ranks[a], this.ranks[b]] = [this.ranks[b], this.ranks[a]];
    [this.positions[a], this.positions[b]] = [this.positions[b], this.positions[a]];
    [this.mergedIds[a], this.mergedIds[b]] = [this.mergedIds[b], this.mergedIds[a]];
  }
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  /** transformers' CLIPTokenizer pads with "<|endoftext|>", the eos token. */
  readonly padId: number;
  readonly contextLength: number;
  readonly vocabSize: number;

  /** Vocabulary id of each byte as a non-final symbol, and as a word-final ("</w>") symbol. */
  private readonly byteIds: Int32Array;
  private readonly finalByteIds: Int32Array;
  /** Keyed by leftId * vocabSize + rightId. */
  private readonly merges: Map<number, MergeRule>;
  /** CLIP piece -> BPE ids, evicted oldest-first beyond BPE_CACHE_CAPACITY. */
  private readonly pieceCache = new Map<string, readonly number[]>();
  private readonly utf8 = new TextEncoder();

  private constructor(
    vocabSize: number,
    byteIds: Int32Array,
    finalByteIds: Int32Array,
    merges: Map<number, MergeRule>,
    bosId: number,
    eosId: number,
    contextLength: number,
  ) {
    this.vocabSize = vocabSize;
    this.byteIds = byteIds;
    this.finalByteIds = finalByteIds;
    this.merges = merges;
    this.bosId = bosId;
    this.eosId = eosId;
    this.padId = eosId;
    this.contextLength = contextLength;
  }

  /**
   * Loads open_clip's gzip BPE file: a header line, then one merge "left right" per line.
   * The vocabulary is the 256 byte characters, the same with "</w>", one entry per merge
   * (its two parts joined), then "<|startoftext|>" and "<|endoftext|>" (49408 ids in all).
   */
  static async fromFile(path: string, contextLength = 32): Promise<ClipTokenizer> {
    if (!Number.isInteger(contextLength) || contextLength < 2) {
      throw new RangeError(`contextLength must be an integer >= 2 (got ${contextLength})`);
    }
    let compressed: Buffer;
    try {
      compressed = await readFile(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'file not found' : `cannot be read (${code ?? err})`;
      throw new Error(`CLIP BPE vocabulary ${path}: ${reason}`, { cause: err });
    }
    let text: string;
    try {
      text = (await gunzipAsync(compressed)).toString('utf8');
    } catch (err) {
      throw new Error(`CLIP BPE vocabulary ${path}: not a gzip file (${(err as Error).message})`, {
        cause: err,
      });
    }
    const malformed = (why: string): Error =>
      new Error(`CLIP BPE vocabulary ${path} is malformed: ${why}`);

    const lines = text.split('\n');
    if (lines.length < MERGE_COUNT + 1) {
      throw malformed(
        `expected a header and ${MERGE_COUNT} merge lines, got ${lines.length} lines`,
      );
    }
    const mergePairs: [string, string][] = [];
    for (let i = 1; i <= MERGE_COUNT; i++) {
      const parts = /^(\S+) (\S+)$/.exec(lines[i]);
      if (parts === null) throw malformed(`line ${i + 1} is not a merge "left right"`);
      mergePairs.push([parts[1], parts[2]]);
    }

    const { bytesInVocabOrder, charOfByte } = byteLevelAlphabet();
    const vocab = new Map<string, number>();
    const tokens: string[] = [];
    for (const b of bytesInVocabOrder) tokens.push(charOfByte[b]);
    for (const b of bytesInVocabOrder) tokens.push(charOfByte[b] + END_OF_WORD_SUFFIX);
    for (const [left, right] of mergePairs) tokens.push(left + right);
    tokens.push(BOS_TOKEN, EOS_TOKEN);
    tokens.forEach((token, id) => vocab.set(token, id));
    const vocabSize = tokens.length;

    const byteIds = new Int32Array(256);
    const finalByteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      byteIds[b] = vocab.get(charOfByte[b]) as number;
      finalByteIds[b] = vocab.get(charOfByte[b] + END_OF_WORD_SUFFIX) as number;
    }

    // As tokenizers' BPE builds its merge map: a repeated pair keeps its last rank.
    const merges = new Map<number, MergeRule>();
    mergePairs.forEach(([left, right], rank) => {
      const leftId = vocab.get(left);
      const rightId = vocab.get(right);
      if (leftId === undefined || rightId === undefined) {
        throw malformed(`merge on line ${rank + 2} uses a token missing from the vocabulary`);
      }
      merges.set(leftId * vocabSize + rightId, {
        rank,
        mergedId: vocab.get(left + right) as number,
      });
    });

    return new ClipTokenizer(
      vocabSize,
      byteIds,
      finalByteIds,
      merges,
      vocab.get(BOS_TOKEN) as number,
      vocab.get(EOS_TOKEN) as number,
      contextLength,
    );
  }

  /**
   * Token ids and mask of one text, exactly as transformers' CLIPTokenizer with
   * `padding="max_length", truncation=True, max_length=contextLength`: content beyond
   * contextLength - 2 ids is dropped, eos always closes the sequence.
   */
  encode(text: string): TokenizedText {
    const content = this.contentIds(text, this.contextLength - 2);
    const ids = new Array<number>(this.contextLength).fill(this.padId);
    const mask = new Array<number>(this.contextLength).fill(0);
    ids[0] = this.bosId;
    for (let i = 0; i < content.length; i++) ids[i + 1] = content[i];
    ids[content.length + 1] = this.eosId;
    mask.fill(1, 0, content.length + 2);
    return { ids, mask };
  }

  encodeBatch(texts: readonly string[]): TokenizedBatch {
    const ids = new Int32Array(texts.length * this.contextLength);
    const mask = new Int32Array(texts.length * this.contextLength);
    texts.forEach((text, row) => {
      const encoded = this.encode(text);
      ids.set(encoded.ids, row * this.contextLength);
      mask.set(encoded.mask, row * this.contextLength);
    });
    return { ids, mask };
  }

  /** The first `limit` content ids (no bos/eos); stops tokenizing once it has enough. */
  private contentIds(text: string, limit: number): number[] {
    const ids: number[] = [];
    // Python strings with lone surrogates cannot reach the Rust tokenizer at all; encode them
    // as UTF-8 would (U+FFFD) instead of failing.
    const wellFormed = text.replace(LONE_SURROGATE_PATTERN, '\ufffd');
    let segmentStart = 0;
    const appendSegment = (segment: string): void => {
      for (const [piece] of normalizeSegment(segment).matchAll(CLIP_PIECE_PATTERN)) {
        if (ids.length >= limit) return;
        for (const id of this.pieceIds(piece)) ids.push(id);
      }
    };
    for (const special of wellFormed.matchAll(SPECIAL_TOKEN_PATTERN)) {
      if (ids.length >= limit) break;
      appendSegment(wellFormed.slice(segmentStart, special.index));
      ids.push(special[0] === BOS_TOKEN ? this.bosId : this.eosId);
      segmentStart = special.index + special[0].length;
    }
    if (ids.length < limit) appendSegment(wellFormed.slice(segmentStart));
    ids.length = Math.min(ids.length, limit);
    return ids;
  }

  private pieceIds(piece: string): readonly number[] {
    const cached = this.pieceCache.get(piece);
    if (cached !== undefined) return cached;
    const ids: number[] = [];
    for (const [word] of piece.matchAll(BYTE_LEVEL_PIECE_PATTERN)) {
      for (const id of this.bpe(this.utf8.encode(word))) ids.push(id);
    }
    if (piece.length <= BPE_CACHE_MAX_PIECE_LENGTH) {
      if (this.pieceCache.size >= BPE_CACHE_CAPACITY) {
        this.pieceCache.delete(this.pieceCache.keys().next().value as string);
      }
      this.pieceCache.set(piece, ids);
    }
    return ids;
  }

  /**
   * BPE of one word's UTF-8 bytes, as tokenizers' `Word::merge_all`: repeatedly apply the
   * lowest-rank merge among adjacent symbols, leftmost first. Symbols form a linked list over
   * their start positions so a heap of (rank, position) candidates stays valid across merges.
   */
  private bpe(bytes: Uint8Array): number[] {
    const n = bytes.length;
    if (n === 0) return [];
    const symbol = new Int32Array(n);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const removed = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      symbol[i] = i === n - 1 ? this.finalByteIds[bytes[i]] : this.byteIds[bytes[i]];
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const queue = new MergeQueue();
    const enqueue = (left: number, right: number): void => {
      const rule = this.merges.get(symbol[left] * this.vocabSize + symbol[right]);
      if (rule !== undefined) queue.push(rule.rank, left, rule.mergedId);
    };
    for (let i = 0; i + 1 < n; i++) enqueue(i, i + 1);

    while (queue.size > 0) {
      const [position, mergedId] = queue.pop();
      if (removed[position] || next[position] === -1) continue;
      const right = next[position];
      // A stale candidate: one of its symbols has since been merged into something else.
      const rule = this.merges.get(symbol[position] * this.vocabSize + symbol[right]);
      if (rule === undefined || rule.mergedId !== mergedId) continue;
      symbol[position] = mergedId;
      removed[right] = 1;
      next[position] = next[right];
      if (next[right] !== -1) prev[next[right]] = position;
      if (prev[position] !== -1) enqueue(prev[position], position);
      if (next[position] !== -1) enqueue(position, next[position]);
    }

    const ids: number[] = [];
    for (let i = 0; i !== -1; i = next[i]) ids.push(symbol[i]);
    return ids;
  }
}
