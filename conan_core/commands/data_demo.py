"""``conan data demo`` (build the real demo corpus) and ``conan data clr`` (translate queries)."""

from __future__ import annotations

import json


def add_data_commands(data_subparsers) -> None:
    """Add ``demo`` and ``clr`` to the subparsers of the ``conan data`` group."""
    p = data_subparsers.add_parser("demo", help="build the bundled real demo corpus (stdlib docs + CLDR names)")
    p.add_argument("--out", required=True, help="output data root (pretrain/ sft/ supervised/ sts/ eval/)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every count (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and of the held-out split")
    p.set_defaults(func=cmd_demo)

    p = data_subparsers.add_parser("clr", help="cross-lingual retrieval data: translate only the queries "
                                               "of a retrieval shard set (RECIPE §6)")
    p.add_argument("--retrieval", required=True, metavar="SHARDS", help="pairs shard directory")
    p.add_argument("--translations", required=True, metavar="PARALLEL",
                   help='parallel JSONL: {"lang": ..., "text": ..., "en": ...} per line')
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


def cmd_clr(args) -> int:
    from conan_core.data.clr import build_clr, parse_shares

    summary = build_clr(args.retrieval, args.translations, parse_shares(args.langs), args.out, args.seed,
                        tasks=None if args.all_tasks else ("retrieval",))
    print(f"wrote {summary['written']} CLR pairs to {args.out} "
          f"(redrawn {summary['redrawn']}, kept source language {summary['kept_source']})")
    print(json.dumps({k: round(v * 100, 2) for k, v in summary["shares"].items()}))
    return 0
