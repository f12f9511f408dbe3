import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { ClipTokenizer, TokenizedText } from '../src/engine/tokenizer';

/** The repository root, found from here whether run from test/ (ts) or dist/test/ (js). */
function repoRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = parent;
  }
  return dir;
}

const ROOT = repoRoot();
const PYTHON = join(ROOT, '.venv', 'bin', 'python');
const REFERENCE = join(ROOT, 'tools', 'tokenizer_reference.py');

function runPython(args: string[], stdin: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [REFERENCE, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`tokenizer_reference.py exited with ${code}: ${stderr}`));
    });
    child.stdin.end(stdin, 'utf8');
  });
}

async function referenceEncodings(texts: string[], maxLength: number): Promise<TokenizedText[]> {
  return JSON.parse(await runPython([String(maxLength)], JSON.stringify(texts))) as TokenizedText[];
}

const longSentence = Array.from(
  { length: 120 },
  (_, i) => `word${i} ${['red', 'apple', 'on', 'the', 'table'][i % 5]}`,
).join(' ');

/** Strings that exercise every stage: normalization, both regexes, byte mapping, BPE, truncation. */
const CORPUS: string[] = [
  // plain words and phrases
  'a photo of a cat',
  'cat',
  'dog',
  'person',
  'traffic light',
  'the red car parked next to a fire hydrant',
  'a man riding a horse on the beach at sunset',
  'yellow school bus',
  'Mixed CaSe WoRdS',
  'ALL CAPS PHRASE',
  'hyphen-ated well-known state-of-the-art',
  'snake_case_identifier and camelCaseIdentifier',
  'the quick brown fox jumps over the lazy dog',
  // numbers
  '3.14',
  '1,000,000',
  '42nd street',
  '2024-01-15T10:30:00Z',
  'version 1.2.3-beta+build.5',
  '½ cup, ² squared, Ⅻ roman, ٣ arabic-indic',
  // contractions
  "don't",
  "it's",
  "WE'LL",
  "they're here, you've seen, I'm fine, she'd go",
  "o'clock rock'n'roll 'quoted'",
  "''s '''",
  // punctuation runs
  '!!!',
  '...?!',
  'hello, world!',
  '(parenthesized) [bracketed] {braced}',
  '#hashtag @mention $100 %50 ^caret &and *star',
  '--- === +++ ~~~',
  'a/b\\c|d',
  '"double" `back` «guillemets» „low“',
  // HTML entities and special-token look-alikes
  '&amp; &lt;tag&gt; &#39; &nbsp;',
  '<b>bold</b> <br/>',
  'before<|endoftext|>after',
  '<|startoftext|>start marker',
  '<|ENDOFTEXT|> in capitals',
  '!<|endoftext|>!',
  '<|endoftext',
  // whitespace
  '  leading and trailing  ',
  'tabs\tand\nnewlines\r\nand\u000bvertical\u000cfeed',
  'non\u00a0breaking\u2003em\u3000ideographic\u202fnarrow',
  'next\u0085line and line\u2028separator and para\u2029graph',
  'zero\u200bwidth and bom\ufeffinside and joiner\u200dhere',
  '',
  '     ',
  '\t\n ',
  // scripts
  '猫の写真',
  '一只在桌子上的红苹果',
  '고양이 사진',
  'Кошка на диване',
  'قطة على الأريكة',
  'חתול על הספה',
  'बिल्ली की तस्वीर',
  'ΟΔΟΣ ΟΔΥΣΣΕΩΣ σοφός',
  'İstanbul ıi ẞtraße Straße',
  'ǅungla ǈ ǋ',
  // accents, precomposed and decomposed (NFC must compose the latter)
  'café naïve résumé',
  'cafe\u0301 nai\u0308ve re\u0301sume\u0301',
  'Ångström ÅNGSTRÖM',
  'A\u030angstro\u0308m',
  'q\u0303 x\u0301\u0323 (marks with no precomposed form)',
  'e\u0301\u0301\u0301 stacked',
  '\u0301 leading combining mark',
  // emoji
  '🐱 cat emoji',
  '👍🏽 thumbs up with skin tone',
  '👨‍👩‍👧‍👦 family ZWJ sequence',
  '🏳️‍🌈 flag',
  '🇫🇷🇯🇵 regional indicators',
  'smile😀😀😀laugh',
  '❤️ heart with variation selector',
  // symbols, control and private-use characters
  '© ® ™ ° ± × ÷ € £ ¥',
  '∑∫√∞≠≤≥',
  'control\u0001\u001f\u007fchars',
  'private\ue000use \u{10ffff} \ufffd',
  'ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３',
  'ﬁ ligature',
  // over-long text
  longSentence,
  'supercalifragilisticexpialidocious'.repeat(20),
  'a'.repeat(1000),
  '1234567890'.repeat(10),
  '!?'.repeat(300),
  '猫'.repeat(200),
];

/**
 * Every code point of the BMP and the emoji blocks, and the ranges where Node's Unicode (17)
 * and the reference's Oniguruma (16) disagree on letters, each as "A<c>b<c>" (so it is seen
 * beside letters, lowercased and NFC-normalized), six to a string: a code point gives at most
 * 20 ids (a musical symbol NFC-decomposes to three 4-byte code points), so 6 x 20 fit in 126.
 */
function codePointSweep(): { texts: string[]; codePoints: number[][] } {
  const ranges: [number, number][] = [
    [0x0000, 0xffff],
    [0x10930, 0x1096f],
    [0x10eb0, 0x10ecf],
    [0x11da0, 0x11def],
    [0x16e90, 0x16edf],
    [0x16ff0, 0x16fff],
    [0x187f0, 0x1880f],
    [0x18d00, 0x18dff],
    [0x1e6b0, 0x1e70f],
    [0x1f000, 0x1faff],
    [0x2b730, 0x2b74f],
    [0x2ce90, 0x2ceaf],
    [0x323a0, 0x3348f],
    [0xe0000, 0xe01ef],
    [0x10fff0, 0x10ffff],
  ];
  const texts: string[] = [];
  const codePoints: number[][] = [];
  let group: number[] = [];
  const flush = (): void => {
    texts.push(
      group.map((c) => `A${String.fromCodePoint(c)}b${String.fromCodePoint(c)}`).join(' '),
    );
    codePoints.push(group);
    group = [];
  };
  for (const [first, last] of ranges) {
    for (let c = first; c <= last; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      group.push(c);
      if (group.length === 6) flush();
    }
  }
  if (group.length > 0) flush();
  return { texts, codePoints };
}

/** Long enough for every sweep string untruncated; the corpus is checked at 32 and at this. */
const LONG_CONTEXT = 128;

describe('ClipTokenizer', () => {
  let bpePath = '';
  let tokenizer: ClipTokenizer;
  let tokenizerLong: ClipTokenizer;
  let reference32: TokenizedText[] = [];
  let referenceLong: TokenizedText[] = [];
  const sweep = codePointSweep();
  let sweepReference: TokenizedText[] = [];

  before(async () => {
    bpePath = (await runPython(['--print-default-bpe'], '')).trim();
    // Two reference runs (each pays for the transformers import), in parallel.
    let referenceLongAndSweep: TokenizedText[];
    [tokenizer, tokenizerLong, reference32, referenceLongAndSweep] = await Promise.all([
      ClipTokenizer.fromFile(bpePath),
      ClipTokenizer.fromFile(bpePath, LONG_CONTEXT),
      referenceEncodings(CORPUS, 32),
      referenceEncodings([...CORPUS, ...sweep.texts], LONG_CONTEXT),
    ]);
    referenceLong = referenceLongAndSweep.slice(0, CORPUS.length);
    sweepReference = referenceLongAndSweep.slice(CORPUS.length);
  });

  test('the corpus covers at least 60 strings', () => {
    assert.ok(CORPUS.length >= 60, `corpus has ${CORPUS.length} strings`);
    assert.equal(reference32.length, CORPUS.length);
    assert.equal(referenceLong.length, CORPUS.length);
  });

  test('ids and mask equal transformers CLIPTokenizer for every corpus string (length 32)', () => {
    CORPUS.forEach((text, i) => {
      assert.deepStrictEqual(
        tokenizer.encode(text),
        reference32[i],
        `text: ${JSON.stringify(text)}`,
      );
    });
  });

  test('ids and mask equal transformers CLIPTokenizer for every corpus string (length 128)', () => {
    CORPUS.forEach((text, i) => {
      assert.deepStrictEqual(
        tokenizerLong.encode(text),
        referenceLong[i],
        `text: ${JSON.stringify(text)}`,
      );
    });
  });

  test('every BMP, emoji and Unicode 17 letter code point tokenizes as in transformers', () => {
    assert.equal(sweepReference.length, sweep.texts.length);
    sweep.texts.forEach((text, i) => {
      const codePoints = sweep.codePoints[i].map((c) => c.toString(16)).join(' ');
      assert.equal(sweepReference[i].mask[LONG_CONTEXT - 1], 0, `truncated: ${codePoints}`);
      assert.deepStrictEqual(
        tokenizerLong.encode(text),
        sweepReference[i],
        `code points ${codePoints}`,
      );
    });
  });

  test('exposes the CLIP special ids and vocabulary size', () => {
    assert.equal(tokenizer.bosId, 49406);
    assert.equal(tokenizer.eosId, 49407);
    assert.equal(tokenizer.padId, 49407);
    assert.equal(tokenizer.vocabSize, 49408);
    assert.equal(tokenizer.contextLength, 32);
    assert.equal(tokenizerLong.contextLength, LONG_CONTEXT);
  });

  test('"a photo of a cat" is bos, five word ids, eos, then eos padding', () => {
    const { ids, mask } = tokenizer.encode('a photo of a cat');
    assert.deepStrictEqual(ids, [49406, 320, 1125, 539, 320, 2368, ...Array(26).fill(49407)]);
    assert.deepStrictEqual(mask, [...Array(7).fill(1), ...Array(25).fill(0)]);
    assert.equal(
      mask.reduce((a, b) => a + b, 0),
      7,
    );
  });

  test('an empty string is bos and eos only', () => {
    const { ids, mask } = tokenizer.encode('');
    assert.deepStrictEqual(ids, [49406, ...Array(31).fill(49407)]);
    assert.deepStrictEqual(mask, [1, 1, ...Array(30).fill(0)]);
  });

  test('over-long text keeps the first 30 content ids and still ends with eos', () => {
    const { ids, mask } = tokenizer.encode(Array(100).fill('cat').join(' '));
    assert.deepStrictEqual(ids, [49406, ...Array(30).fill(2368), 49407]);
    assert.deepStrictEqual(mask, Array(32).fill(1));
  });

  test('special-token text in the input becomes the special id, case-sensitively', () => {
    assert.deepStrictEqual(
      tokenizer.encode('a<|endoftext|>b').ids.slice(0, 5),
      [49406, 320, 49407, 321, 49407],
    );
    assert.notEqual(tokenizer.encode('<|ENDOFTEXT|>').ids[1], 49407);
  });

  test('a lone surrogate is tokenized as U+FFFD instead of throwing', () => {
    assert.deepStrictEqual(tokenizer.encode('x\ud800y'), tokenizer.encode('x\ufffdy'));
  });

  test('encodeBatch lays the rows of encode out row-major', () => {
    const texts = ['a photo of a cat', '', 'café 🐱', longSentence];
    const batch = tokenizer.encodeBatch(texts);
    assert.equal(batch.ids.length, texts.length * 32);
    assert.equal(batch.mask.length, texts.length * 32);
    texts.forEach((text, row) => {
      const single = tokenizer.encode(text);
      assert.deepStrictEqual(Array.from(batch.ids.subarray(row * 32, row * 32 + 32)), single.ids);
      assert.deepStrictEqual(Array.from(batch.mask.subarray(row * 32, row * 32 + 32)), single.mask);
    });
  });

  test('repeated encodes (served from the BPE cache) give the same ids', () => {
    const first = CORPUS.map((text) => tokenizer.encode(text));
    const second = CORPUS.map((text) => tokenizer.encode(text));
    assert.deepStrictEqual(second, first);
  });

  test('a missing vocabulary file rejects with a message naming the path', async () => {
    const missing = join(tmpdir(), 'no-such-dir', 'bpe_simple_vocab_16e6.txt.gz');
    await assert.rejects(ClipTokenizer.fromFile(missing), (err: Error) => {
      assert.match(err.message, /file not found/);
      assert.ok(err.message.includes(missing), err.message);
      return true;
    });
  });

  test('a file that is not gzip or has too few merges rejects naming the path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clip-bpe-'));
    try {
      const notGzip = join(dir, 'plain.txt.gz');
      await writeFile(notGzip, 'i n\nt h\n');
      await assert.rejects(ClipTokenizer.fromFile(notGzip), (err: Error) => {
        assert.ok(err.message.includes(notGzip), err.message);
        assert.match(err.message, /not a gzip file/);
        return true;
      });
      const truncated = join(dir, 'truncated.txt.gz');
      await writeFile(truncated, gzipSync('#version: 0.2\ni n\nt h\n'));
      await assert.rejects(ClipTokenizer.fromFile(truncated), (err: Error) => {
        assert.ok(err.message.includes(truncated), err.message);
        assert.match(err.message, /malformed/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a context length below 2 is refused', async () => {
    await assert.rejects(ClipTokenizer.fromFile(bpePath, 1), RangeError);
  });
});
