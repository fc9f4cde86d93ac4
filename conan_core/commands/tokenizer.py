"""``conan tokenizer train``: train the sentencepiece BPE tokenizer and save it for transformers."""

from __future__ import annotations

import argparse
import json


def add_commands(subparsers) -> None:
    """Add the ``tokenizer`` command group to the top-level ``conan`` subparsers."""
    group = subparsers.add_parser("tokenizer", help="train or inspect a tokenizer")
    sub = group.add_subparsers(dest="tokenizer_command", metavar="TOKENIZER_COMMAND")
    group.set_defaults(func=lambda args: _usage(group))

    p = sub.add_parser("train", help="train a byte-fallback BPE tokenizer (sentencepiece) and save it "
                                     "as a transformers fast tokenizer")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_SHARDS",
                   help="text files (one text per line), JSONL files (text/query/pos fields) or shard "
                        "directories (manifest.json + *.tar)")
    p.add_argument("--vocab-size", type=int, required=True, help="total ids, the 263 reserved ones included "
                                                                 "(RECIPE: 150000; tiny demo: 2000)")
    p.add_argument("--out", required=True, help="output directory (AutoTokenizer.from_pretrained loads it)")
    p.add_argument("--character-coverage", type=float, default=0.9995,
                   help="share of character occurrences that get their own token (default 0.9995; "
                        "1.0 is fine for alphabetic scripts, keep 0.9995 for CJK-heavy data)")
    p.add_argument("--max-sentences", type=int, default=200_000,
                   help="texts sampled at random from the input (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("encode", help="print the tokens of a text with a saved tokenizer")
    p.add_argument("path", help="tokenizer directory")
    p.add_argument("text", help="text to encode")
    p.set_defaults(func=cmd_encode)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_train(args) -> int:
    from conan_core.tokenizer import load_tokenizer, train_tokenizer

    out = train_tokenizer(args.input, args.vocab_size, args.out, character_coverage=args.character_coverage,
                          max_sentences=args.max_sentences, seed=args.seed)
    tok = load_tokenizer(out)
    meta = json.loads((out / "conan_tokenizer.json").read_text(encoding="utf-8"))
    print(f"tokenizer saved to {out}: {len(tok)} ids, {meta['sentences']} training texts, "
          f"{meta['characters']} characters with their own token "
          f"(coverage {meta['effective_character_coverage']:.6g})")
    return 0


def cmd_encode(args) -> int:
    from conan_core.tokenizer import clean_text, load_tokenizer

    tok = load_tokenizer(args.path)
    ids = tok.encode(clean_text(args.text), add_special_tokens=False)
    print(json.dumps({"ids": ids, "tokens": tok.convert_ids_to_tokens(ids)}, ensure_ascii=False))
    return 0
