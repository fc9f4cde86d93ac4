"""``conan data write-shards`` and ``conan data check``.

``conan_core.cli`` wires these under one ``conan data`` group with :func:`add_data_commands`
(``add_commands`` does the same on a top-level subparsers object, creating the group if absent).
Each command's ``func(args) -> int`` is its exit status; errors raise and get their exit code
from the CLI (bad input data: 3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

from conan_core.data.samples import KINDS, DataError


def _read_input(path: Path, kind: str, skipped: dict[str, int] | None = None) -> Iterator[dict]:
    """Samples of a .jsonl file (one object per line) or a .txt file (one text per non-empty line).

    A line that is not UTF-8 (or, in JSONL, not a JSON value) raises :class:`DataError` naming the
    file and line, or, when ``skipped`` is a dict, is counted there (``bad_text`` / ``bad_json``)
    and left out."""
    if path.suffix not in (".txt", ".jsonl"):
        raise DataError(f"{path}: --input must be a .jsonl or .txt file", reason="bad_arg")
    if path.suffix == ".txt" and kind != "text":
        raise DataError(f"{path}: a .txt input holds one text per line, so --kind must be text "
                        f"(got {kind}); use a .jsonl file for {kind}", reason="bad_arg")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if skipped is not None:
                    skipped["bad_text"] = skipped.get("bad_text", 0) + 1
                    continue
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte {exc.start}: "
                                f"{raw[exc.start:exc.start + 4]!r}); fix the line or pass --skip-bad to leave "
                                "such lines out", reason="bad_text") from None
            if path.suffix == ".txt":
                yield {"text": line.rstrip("\n")}
                continue
            try:
                yield json.loads(line)
            except ValueError as exc:
                if skipped is not None:
                    skipped["bad_json"] = skipped.get("bad_json", 0) + 1
                    continue
                raise DataError(f"{path}:{number}: not a JSON line ({exc}); fix the line or pass --skip-bad",
                                reason="bad_json") from None


def cmd_write_shards(args: argparse.Namespace) -> int:
    from conan_core.data.shards import write_shards

    path = Path(args.input)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist", reason="bad_arg")
    skipped: dict[str, int] | None = {} if args.skip_bad else None
    manifest = write_shards(_read_input(path, args.kind, skipped), args.out, kind=args.kind,
                            shard_size=args.shard_size, prefix=args.prefix,
                            on_bad_sample="skip" if args.skip_bad else "raise", skipped=skipped)
    print(f"wrote {manifest.count} {manifest.kind} samples in {len(manifest.shards)} shard(s) to {args.out}")
    if skipped:
        print(f"skipped {sum(skipped.values())} bad input(s): "
              + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())), file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from conan_core.data.shards import check_shards, read_manifest

    problems = check_shards(args.dir, max_chars=args.max_chars)
    if problems:
        for p in problems:
            print(f"BAD {p}", file=sys.stderr)
        print(f"{len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    manifest = read_manifest(args.dir)
    print(f"OK {args.dir}: {len(manifest.shards)} shard(s), {manifest.count} {manifest.kind} samples")
    return 0


def add_data_commands(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``write-shards`` and ``check`` to an existing ``conan data`` sub-subparsers object."""
    p = data_subparsers.add_parser("write-shards", help="write webdataset shards + manifest from a "
                                   ".jsonl or .txt file")
    p.add_argument("--input", required=True, help=".jsonl (one sample object per line) or .txt "
                   "(one text per line, --kind text)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--prefix", default="shard", help="shard file prefix (default shard)")
    p.add_argument("--skip-bad", action="store_true", help="leave out invalid samples instead of failing")
    p.set_defaults(func=cmd_write_shards)
    c = data_subparsers.add_parser("check", help="verify a shard set against its manifest (exit 1 "
                                   "naming each bad shard)")
    c.add_argument("dir", help="directory holding manifest.json")
    c.add_argument("--max-chars", type=int, default=None,
                   help="validate texts against this length limit too (data.max_chars of the run)")
    c.set_defaults(func=cmd_check)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the commands under ``data`` of a top-level subparsers object (group made if absent)."""
    parser = subparsers.choices.get("data")
    if parser is None:
        parser = subparsers.add_parser("data", help="data shards: write, check")
    group = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if group is None:
        group = parser.add_subparsers(dest="data_command", required=True)
    add_data_commands(group)


def main(argv: list[str] | None = None) -> int:
    """``python -m conan_core.commands.data write-shards|check ...``: ``conan data ...``, with its
    error messages and exit codes."""
    from conan_core.cli import main as conan_main

    return conan_main(["data", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
