"""``conan data demo`` (build the real demo corpus) and ``conan data clr`` (translate queries)."""

from __future__ import annotations

import json


def add_data_commands(data_subparsers) -> None:
    """Add ``demo`` and ``clr`` to the subparsers of the ``conan data`` group."""
    p = data_subparsers.add_parser("demo", help="build the bundled real demo corpus (docstrings of the stdlib and "
                                                "of installed packages, Django's translation catalogs, CLDR names)")
    p.add_argument("--out", required=True, help="output data root (pretrain/ sft/ supervised/ sts/ eval/)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every count (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and of the held-out split")
    p.set_defaults(func=cmd_demo)

    p = data_subparsers.add_parser("clr", help="cross-lingual retrieval data: translate only the queries "
                                               "of a retrieval set (RECIPE §6)")
    p.add_argument("--retrieval", required=True, metavar="PAIRS",
                   help="pairs shard directory, or a JSONL file of pairs (query, pos, neg, lang)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--translations", metavar="PARALLEL",
                        help='parallel JSONL for the lookup translator: {"lang": ..., "text": ..., "en": ...} per line')
    source.add_argument("--translator", metavar="KEY_OR_JSON",
                        help="a translators key (e.g. gettext: the catalogs shipped inside installed packages) "
                             'or a JSON spec such as \'{"type": "gettext", "packages": ["django"]}\'')
    p.add_argument("--src-lang", default=None, metavar="LANG",
                   help="language of queries whose pair has no lang field (without it such a pair is an error)")
    p.add_argument("--langs", default="paper",
                   help="language shares LANG:SHARE,... (any scale, normalised), or 'paper' for the "
                        "26-language table of RECIPE §6 (default)")
    p.add_argument("--out", required=True, help="output shard directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-tasks", action="store_true",
                   help="use every pair, not only those with task 'retrieval'")
    p.set_defaults(func=cmd_clr)


def cmd_demo(args) -> int:
    from conan_core.data.demo import build_demo

    build_demo(args.out, seed=args.seed, scale=args.scale, verbose=True)
    return 0


def translator_spec(text: str) -> dict:
    """``--translator`` value: a registry key, or a JSON object with a ``type`` key."""
    from conan_core.data.clr import CLRError

    text = text.strip()
    if not text.startswith("{"):
        return {"type": text}
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLRError(f"--translator: invalid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise CLRError(f'--translator: a JSON spec must be an object with a "type" key, got {text}')
    return spec


def cmd_clr(args) -> int:
    from conan_core.data.clr import build_clr, parse_shares

    translations = args.translations if args.translations else translator_spec(args.translator)
    summary = build_clr(args.retrieval, translations, parse_shares(args.langs), args.out, args.seed,
                        tasks=None if args.all_tasks else ("retrieval",), src_lang=args.src_lang)
    print(f"wrote {summary['written']} CLR pairs to {args.out} "
          f"(redrawn {summary['redrawn']}, kept source language {summary['kept_source']})")
    print(json.dumps({k: round(v * 100, 2) for k, v in summary["shares"].items()}))
    return 0
