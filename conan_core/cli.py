"""The ``conan`` command line.

Core commands live here (list, validate, schema, run); each other command group lives in its own
module under ``conan_core/commands/`` exposing ``add_commands(subparsers)`` (or, for the ``data``
group, ``add_data_commands(data_subparsers)``). Every subcommand sets ``func(args) -> int``.
User errors (``ConanError``) print to stderr without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import sys
from typing import Sequence

from conan_core.errors import EXIT_CODES, ConanError, ConfigError, StorageError

# Command modules, in the order they appear in --help.
COMMAND_MODULES = (
    "conan_core.commands.run",
    "conan_core.commands.model",
    "conan_core.commands.mask",
    "conan_core.commands.tokenizer",
    "conan_core.commands.train",
    "conan_core.commands.mine",
    "conan_core.commands.eval",
)
DATA_COMMAND_MODULES = ("conan_core.commands.data", "conan_core.commands.data_demo")


def _import_command_module(name: str):
    """The command module, or None when it is not part of this installation (tests assert all are)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conan", description="Train text embedders the Conan-embedding-v2 way.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()))
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered components (keys, origin, config fields)")
    p.add_argument("kind", nargs="?", help="one registry kind (masks, losses, ...); default: all")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("validate", help="validate a run config (YAML file or preset); exit 1 on errors")
    p.add_argument("config", help="YAML path or preset name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set weak.mask.schedule.type=cosine (repeatable)")
    p.add_argument("--print", dest="print_resolved", action="store_true",
                   help="print the resolved config (defaults filled in)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON schema of RunConfig")
    p.set_defaults(func=cmd_schema)

    for name in COMMAND_MODULES:
        module = _import_command_module(name)
        if module is not None:
            module.add_commands(sub)

    data = sub.add_parser("data", help="data shards, checks, the demo corpus and CLR data")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: _missing_subcommand(data))
    for name in DATA_COMMAND_MODULES:
        module = _import_command_module(name)
        if module is not None:
            module.add_data_commands(data_sub)
    return parser


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _version() -> str:
    from conan_core import __version__

    return f"conan-core {__version__}"


# ----------------------------------------------------------------------------- core commands

def cmd_list(args) -> int:
    from conan_core.registries import REGISTRIES, registry

    kinds = [args.kind] if args.kind else sorted(REGISTRIES)
    report = {}
    for kind in kinds:
        reg = registry(kind)
        rows = []
        for key in reg.keys():
            rows.append(describe_key(reg, key))
        report[kind] = rows
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    for kind in kinds:
        reg = REGISTRIES[kind]
        print(f"{kind}  ({reg.description})")
        for row in report[kind]:
            status = f"  BROKEN: {row['error']}" if row["error"] else ""
            print(f"  {row['key']:<22} [{row['origin']}]{status}")
            for fname, ftype, default in row["fields"]:
                print(f"      {fname}: {ftype} = {default!r}")
        print()
    return 0


def describe_key(reg, key: str) -> dict:
    """key, origin, error (or None) and the config fields (name, type, default) of one key."""
    entry = reg.entry(key)
    row = {"key": key, "origin": entry.origin, "error": None, "fields": []}
    try:
        conf = reg.config_class(key)
    except ConanError:
        row["error"] = reg.entry(key).error
        return row
    for fname, info in conf.model_fields.items():
        default = info.get_default(call_default_factory=True)
        row["fields"].append((fname, _type_name(info.annotation), default))
    return row


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def cmd_validate(args) -> int:
    from conan_core.config import apply_overrides, read_yaml, resolve, validate_dict

    raw, source = read_yaml(args.config)
    raw = apply_overrides(raw, args.overrides)
    cfg, issues = validate_dict(raw, source)
    if issues:
        print(str(ConfigError(issues, source)), file=sys.stderr)
        return ConfigError.exit_code
    if args.print_resolved:
        import yaml

        print(yaml.safe_dump(resolve(cfg), sort_keys=False, allow_unicode=True), end="")
    print(f"{source}: valid", file=sys.stderr)
    return 0


def cmd_schema(args) -> int:
    from conan_core.config import RunConfig

    print(json.dumps(RunConfig.model_json_schema(), indent=2))
    return 0


# ----------------------------------------------------------------------------- entry point

def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``conan`` command; returns its exit code (:data:`conan_core.errors.EXIT_CODES`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except ConanError as exc:
        if debug:
            raise
        print(f"conan: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        print("conan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # storage failures of any layer get a message, not a traceback
        message = storage_message(exc)
        if message is None or debug:
            raise
        print(f"conan: error: {message}", file=sys.stderr)
        return StorageError.exit_code


_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.EPERM: "operation not permitted", errno.EIO: "write failed (I/O error)"}


def storage_message(exc: BaseException) -> str | None:
    """A one-paragraph message for a write that failed for lack of space or permission, whichever
    layer raised it (:func:`conan_core.fsio.storage_errno`), naming the path when any layer knew
    it; None for any other exception."""
    from conan_core.fsio import storage_errno

    code = storage_errno(exc)
    path = None
    seen: BaseException | None = exc
    while seen is not None and path is None:
        path = seen.filename if isinstance(seen, OSError) else None
        seen = seen.__cause__ or seen.__context__
    if code not in _STORAGE_ERRNOS:
        return None
    where = f": {path}" if path else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        advice = ("Free space (or point --out / the run directory at a larger disk) and re-run the same "
                  "command: checkpoints are committed atomically, so the run resumes from the last one.")
    else:
        advice = ("Point --out (or the run directory) at a writable location, or fix the directory's "
                  "permissions, then re-run the same command.")
    return f"{_STORAGE_ERRNOS[code]}{where}. {advice} ({type(exc).__name__}: {exc})"


if __name__ == "__main__":
    sys.exit(main())
