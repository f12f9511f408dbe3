"""Reference CLIP token ids from transformers' CLIPTokenizer, for the TypeScript tokenizer's tests.

Builds the tokenizer from open_clip's `bpe_simple_vocab_16e6.txt.gz` (written out as the
vocab.json + merges.txt that transformers loads), reads a JSON list of strings on stdin and
prints `[{"ids": [...], "mask": [...]}, ...]`, one entry per string, encoded with
`padding="max_length", truncation=True, max_length=N`.

Usage: tokenizer_reference.py [N] [--bpe PATH] < texts.json   (N defaults to 32)
       tokenizer_reference.py --print-default-bpe               (the path used without --bpe)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sam3_tools.vocab import open_clip_vocab  # noqa: E402

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# open_clip's SimpleTokenizer: merges = lines[1 : 49152 - 256 - 2 + 1]
MERGE_COUNT = 49152 - 256 - 2


def default_bpe_path() -> str:
    path = open_clip_vocab()
    if path is None:
        raise SystemExit("open_clip is not installed; pass --bpe PATH")
    return str(path)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, in vocabulary order (as open_clip)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_vocab_and_merges(bpe_path: str) -> tuple[list[str], list[str]]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : MERGE_COUNT + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    return vocab, merges


def build_tokenizer(bpe_path: str, directory: str):
    from transformers import CLIPTokenizer

    vocab, merges = load_vocab_and_merges(bpe_path)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(
        directory,
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("max_length", nargs="?", type=int, default=32)
    parser.add_argument("--bpe", default=None, help="open_clip BPE file (.txt.gz)")
    parser.add_argument("--print-default-bpe", action="store_true")
    args = parser.parse_args()
    if args.print_default_bpe:
        print(default_bpe_path())
        return
    bpe_path = args.bpe or default_bpe_path()

    texts = json.load(sys.stdin)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SystemExit("stdin must be a JSON list of strings")

    if not texts:  # a batch call needs at least one text
        print("[]")
        return
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = build_tokenizer(bpe_path, directory)
        encoded = tokenizer(
            texts, padding="max_length", truncation=True, max_length=args.max_length
        )
    rows = zip(encoded["input_ids"], encoded["attention_mask"])
    json.dump([{"ids": ids, "mask": mask} for ids, mask in rows], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
