"""The reading engine every source shares: splitting, shuffling, exact resume and bad data.

Splitting
    The readers of one run are *pieces*: ``piece = rank * num_workers + worker`` out of
    ``world_size * num_workers`` (worker from ``torch.utils.data.get_worker_info()``, 0 of 1
    outside a DataLoader). Per epoch all pieces agree on one unit order (shards or files, shuffled
    with ``seed`` and the epoch when ``shuffle_shards``). ``split="shard"``: piece p reads units
    ``order[p::n_pieces]`` (needs at least ``n_pieces`` units, else an error says how many);
    ``split="sample"``: every piece reads every unit and keeps the records whose index in the
    epoch's record stream is ``p`` modulo ``n_pieces`` (record counts per piece differ by at most
    one); ``split="auto"`` (default): shard when there are at least ``n_pieces`` units, else
    sample. Either way the pieces of an epoch are a partition of the records.

Shuffling and epochs
    Valid samples pass a shuffle buffer of ``shuffle_buffer`` samples (0 or 1: no shuffling)
    driven by a ``random.Random`` seeded from (seed, epoch, rank, worker). The buffer is drained at
    the end of each epoch, so epochs never mix. ``loop=True`` starts the next epoch at once (an
    endless stream for training; ``epoch`` counts finished epochs); ``loop=False`` ends the
    iterator at the epoch end (the next ``iter()`` reads the next epoch); ``epochs=N`` stops for
    good after N epochs. An epoch that yields nothing for a looping piece raises DataError instead
    of spinning forever.

Exact resume
    The state is the position itself, no re-reading: epoch, index in the unit order, byte offset
    of the next record in the current unit (tar header or JSONL line), the record index, the
    shuffle buffer's samples, the RNG state and the counters. A source restored from
    ``state_dict()`` yields exactly the samples the original would have yielded next.
    ``load_state_dict`` refuses a state from different data or a different world (fingerprint of
    the manifests, rank, world_size, seed, split, buffer size, task filter; at iteration start also
    num_workers and the worker id) with an error naming each field and its old and new values,
    unless ``allow_data_change`` is set (then the saved epoch restarts from its beginning with a
    warning).

Bad data
    Sample problems are counted under their reason (conan_core.data.samples) and the sample is
    dropped, or, with ``on_bad_sample="raise"``, raise DataError naming the shard and key.
    Shard problems, each counted once per epoch by the piece that owns the shard:

    ``missing_shard``     file absent: whole shard lost
    ``sha_mismatch``      (``verify``) size or sha256 differs from the manifest: whole shard
                          skipped unread (a size smaller than the manifest's also counts
                          ``truncated_shard``)
    ``truncated_shard``   the tar ends inside a member or is not a tar: samples before the cut
                          are kept
    ``count_mismatch``    the tar ends cleanly but holds another number of samples than the
                          manifest (e.g. cut at a member boundary)
    ``partial_sample``    a sample lacks one of the manifest's member extensions
    ``interleaved_key``   a key appears again after other keys (``0.txt, 1.txt, 0.json``)

    ``lost_samples`` adds the manifest's count of samples never read because of a shard
    problem. In raise mode every shard problem raises DataError naming the shard.
"""

from __future__ import annotations

import copy
import logging
import random
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from pydantic import Field

from conan_core.data.resumable import derive_seed, rng_state, set_rng_state, worker_split
from conan_core.data.samples import DataError
from conan_core.data.shards import TAR_ERRORS, file_sha256
from conan_core.registry import ComponentConfig
from conan_core.sources.base import Source

logger = logging.getLogger("conan_core.data")

#: every counter a source reports (all present, zero when nothing happened)
COUNTERS: tuple[str, ...] = (
    "samples", "bad_text", "bad_json", "bad_score", "empty_text", "missing_key", "too_long",
    "repaired_text", "partial_sample", "interleaved_key", "filtered", "truncated_shard",
    "count_mismatch", "sha_mismatch", "missing_shard", "lost_samples",
)
#: errors raised while reading a damaged unit (records never raise DataError, so ValueError is safe)
READ_ERRORS = TAR_ERRORS
STATE_VERSION = 1
_LOGGED_PER_REASON = 5


# ----------------------------------------------------------------------------- configs

class ReaderConfig(ComponentConfig):
    """Fields shared by every reader (see the module docstring for the behaviour)."""

    path: str | list[str] = Field(..., description="shard directory with manifest.json "
                                  "(or JSONL file), or a list of them read as one set")
    shuffle_buffer: int = Field(1000, ge=0, description="samples in the shuffle buffer (0/1 = none)")
    shuffle_shards: bool = Field(True, description="shuffle the unit order each epoch")
    on_bad_sample: Literal["skip", "raise"] = Field(
        "skip", description="skip: drop and count bad samples/shards; raise: DataError naming them")
    repair_text: bool = Field(False, description="replace invalid UTF-8 and lone surrogates by "
                              "U+FFFD and drop NULs instead of rejecting the sample")
    max_chars: int = Field(20000, ge=1, description="text fields are cut to this many code points "
                           "(counted as too_long)")
    loop: bool = Field(True, description="start the next epoch at once (endless stream)")
    epochs: int | None = Field(None, ge=1, description="stop for good after this many epochs")
    split: Literal["auto", "shard", "sample"] = Field(
        "auto", description="how ranks x workers share the data: whole shards, or records modulo")
    allow_data_change: bool = Field(False, description="on resume with changed data/world, restart "
                                    "the saved epoch instead of failing")


# ----------------------------------------------------------------------------- engine

@dataclass(frozen=True)
class Unit:
    """One shard or file: url (for messages and ``__url__``), expected sample count (None when
    unknown), sha256/bytes from the manifest, and the member extensions each sample must have."""

    url: str
    path: Path
    count: int | None = None
    sha256: str | None = None
    bytes: int | None = None
    fields: tuple[str, ...] = ()


@dataclass
class Record:
    """One raw record of a unit, before decoding."""

    key: str
    payload: Any
    next_offset: int | None  # where the next record starts; None: this was the last one
    repeated: bool = False


class ShardedSource(Source):
    """The reading engine; subclasses say what a unit is and how a record decodes.

    Subclasses define ``kind`` (sample schema) and implement ``_load_units``, ``_records`` and
    ``_decode``; see the module docstring for splitting, shuffling, resume and bad data.
    """

    kind: ClassVar[str] = "text"
    Config = ReaderConfig

    def __init__(self, config: ReaderConfig, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 **runtime: Any):
        super().__init__(config)
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"{type(self).__name__}: need 0 <= rank < world_size, got rank={rank}, "
                            f"world_size={world_size}", reason="bad_arg")
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self._units: list[Unit] | None = None
        self._fingerprint: str | None = None
        self._st: dict[str, Any] | None = None
        self._pristine = False  # state made lazily, not yet bound to a worker by iteration
        self._rng = random.Random(0)
        self._verified: dict[str, tuple[int, int]] = {}
        self._logged: dict[str, int] = {}
        self._problems: deque[str] = deque(maxlen=50)

    # -- to implement
    @abstractmethod
    def _load_units(self) -> tuple[list[Unit], str]:
        """(units in their canonical order, fingerprint of the data)."""

    @abstractmethod
    def _records(self, unit: Unit, offset: int, index: int) -> Iterator[Record]:
        """Records of ``unit`` from byte ``offset`` (the ``index``-th record starts there).
        Raises one of READ_ERRORS when the unit is damaged."""

    @abstractmethod
    def _decode(self, record: Record, unit: Unit) -> tuple[dict, list[str]] | None:
        """(sample, events) or None for a record that is no sample (blank line); DataError if bad."""

    # -- public
    def units(self) -> list[Unit]:
        """The units (shards / files) of this source, in canonical order (reads the manifests)."""
        if self._units is None:
            self._units, self._fingerprint = self._load_units()
        return self._units

    @property
    def fingerprint(self) -> str:
        self.units()
        return self._fingerprint

    @property
    def epoch(self) -> int:
        """Number of finished epochs of this reader."""
        return self._st["epoch"] if self._st is not None else 0

    def counters(self) -> dict[str, int]:
        if self._st is None:
            return dict.fromkeys(COUNTERS, 0)
        return dict(self._st["counters"])

    def problems(self) -> list[str]:
        """The last (up to 50) bad-data messages of this process, newest last."""
        return list(self._problems)

    def state_dict(self) -> dict:
        st = self._state()
        out = copy.deepcopy(st)
        out["rng"] = rng_state(self._rng)
        return out

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise DataError(f"{type(self).__name__}: not a source state (version "
                            f"{state.get('version') if isinstance(state, dict) else None!r}, expected "
                            f"{STATE_VERSION})", reason="bad_state")
        if state.get("source") != type(self).__name__:
            raise DataError(f"{type(self).__name__}: the state belongs to a {state.get('source')!r} "
                            "source", reason="bad_state")
        st = copy.deepcopy(state)
        rng = st.pop("rng")
        diffs = self._differences(st, check_worker=False)
        self._st = st
        self._pristine = False
        set_rng_state(self._rng, rng)
        if diffs:
            self._on_change(diffs)

    # -- state
    def _identity(self, worker: int, num_workers: int) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "seed": self.seed,
                "worker": worker, "num_workers": num_workers, "fingerprint": self.fingerprint,
                "split": self.config.split, "shuffle_buffer": self.config.shuffle_buffer,
                "shuffle_shards": self.config.shuffle_shards, "filter": self._filter_identity()}

    def _filter_identity(self) -> Any:
        return None

    def _fresh_state(self, worker: int, num_workers: int) -> dict[str, Any]:
        st = {"version": STATE_VERSION, "source": type(self).__name__, **self._identity(worker, num_workers),
              "epoch": 0, "counters": dict.fromkeys(COUNTERS, 0)}
        self._start_epoch(st)
        return st

    def _start_epoch(self, st: dict[str, Any]) -> None:
        st.update(pos=0, offset=0, records=0, unit_failed=False, global_index=0, epoch_yielded=0,
                  buffer=[])
        self._rng.seed(derive_seed(self.seed, "buffer", st["epoch"], st["rank"], st["worker"]))

    def _state(self) -> dict[str, Any]:
        if self._st is None:
            self._st = self._fresh_state(*worker_split())
            self._pristine = True
        return self._st

    def _differences(self, st: dict[str, Any], *, check_worker: bool) -> list[str]:
        worker, num_workers = worker_split()
        now = self._identity(worker, num_workers)
        skip = () if check_worker else ("worker", "num_workers")
        return [f"{name}: checkpoint {st.get(name)!r}, now {value!r}" for name, value in now.items()
                if name not in skip and st.get(name) != value]

    def _on_change(self, diffs: list[str]) -> None:
        what = "; ".join(diffs)
        if not self.config.allow_data_change:
            raise DataError(f"{type(self).__name__}: cannot resume: the data or world differs from the "
                            f"checkpoint ({what}); restore the same setup, or set allow_data_change "
                            "to restart the saved epoch with the new one", reason="data_changed")
        logger.warning("%s: data or world changed since the checkpoint (%s); restarting epoch %d",
                       type(self).__name__, what, self._st["epoch"])
        worker, num_workers = worker_split()
        self._st.update(self._identity(worker, num_workers))
        self._start_epoch(self._st)

    # -- iteration
    def _plan(self, st: dict[str, Any], n_pieces: int, piece: int) -> tuple[list[int], bool]:
        """(unit indices this piece reads in this epoch, whether records are split modulo)."""
        units = self.units()
        order = list(range(len(units)))
        if self.config.shuffle_shards:
            random.Random(derive_seed(self.seed, "units", st["epoch"])).shuffle(order)
        mode = self.config.split
        if mode == "auto":
            mode = "shard" if len(units) >= n_pieces else "sample"
        if mode == "shard":
            if len(units) < n_pieces:
                raise DataError(f"{type(self).__name__} ({self.config.path}): split='shard' needs >= "
                                f"world_size x num_workers shards (have {len(units)}, need {n_pieces}); "
                                "write more shards or use split='sample'", reason="too_few_shards")
            return order[piece::n_pieces], False
        return order, True

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = worker_split()
        if self._pristine:  # a state made before iteration (e.g. by state_dict()) binds no worker yet
            self._st = None
        st = self._state()
        self._pristine = False
        diffs = self._differences(st, check_worker=True)
        if diffs:
            self._on_change(diffs)
        n_pieces = self.world_size * num_workers
        piece = self.rank * num_workers + worker
        cfg = self.config
        if not self.units() and (cfg.loop or cfg.epochs):
            raise DataError(f"{type(self).__name__} ({cfg.path}): no shards to read", reason="no_samples")
        while cfg.epochs is None or st["epoch"] < cfg.epochs:
            units = self.units()
            plan, by_record = self._plan(st, n_pieces, piece)
            while st["pos"] < len(plan):
                index = plan[st["pos"]]
                owner = (not by_record) or index % n_pieces == piece
                yield from self._read_unit(units[index], st, by_record, n_pieces, piece, owner)
                st.update(pos=st["pos"] + 1, offset=0, records=0, unit_failed=False)
            buffer = st["buffer"]
            while buffer:
                j = self._rng.randrange(len(buffer))
                out = buffer[j]
                buffer[j] = buffer[-1]
                buffer.pop()
                yield self._emit(st, out)
            if st["epoch_yielded"] == 0 and (cfg.loop or cfg.epochs):
                raise DataError(
                    f"{type(self).__name__} ({cfg.path}): epoch {st['epoch']} gave no samples to rank "
                    f"{self.rank} worker {worker} (of {num_workers}); counters {self._nonzero(st)}; "
                    "looping would never yield", reason="no_samples")
            st["epoch"] += 1
            self._start_epoch(st)
            if not cfg.loop:
                return

    @staticmethod
    def _nonzero(st: dict[str, Any]) -> dict[str, int]:
        return {k: v for k, v in st["counters"].items() if v}

    def _emit(self, st: dict[str, Any], sample: dict) -> dict:
        st["epoch_yielded"] += 1
        st["counters"]["samples"] += 1
        return sample

    def _read_unit(self, unit: Unit, st: dict[str, Any], by_record: bool, n_pieces: int, piece: int,
                   owner: bool) -> Iterator[dict]:
        if st["offset"] is not None and not self._check_unit(unit, st, owner):
            return
        if st["offset"] is not None:
            records = self._records(unit, st["offset"], st["records"])
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except READ_ERRORS as exc:
                    lost = self._lost(unit, st)
                    self._unit_problem("truncated_shard", unit, st, owner, lost,
                                       f"unreadable after {st['records']} samples "
                                       f"({type(exc).__name__}: {exc})")
                    return
                st["offset"] = record.next_offset
                st["records"] += 1
                if by_record:
                    mine = st["global_index"] % n_pieces == piece
                    st["global_index"] += 1
                    if not mine:
                        continue
                sample = self._accept(record, unit, st)
                if sample is None:
                    continue
                size = self.config.shuffle_buffer
                if size <= 1:
                    yield self._emit(st, sample)
                elif len(st["buffer"]) < size:
                    st["buffer"].append(sample)
                else:
                    j = self._rng.randrange(size)
                    out = st["buffer"][j]
                    st["buffer"][j] = sample
                    yield self._emit(st, out)
            st["offset"] = None
        if not st["unit_failed"] and unit.count is not None and st["records"] != unit.count:
            self._unit_problem("count_mismatch", unit, st, owner, max(0, unit.count - st["records"]),
                               f"expected {unit.count} samples, got {st['records']}")

    def _lost(self, unit: Unit, st: dict[str, Any]) -> int:
        return max(0, unit.count - st["records"]) if unit.count is not None else 0

    def _check_unit(self, unit: Unit, st: dict[str, Any], owner: bool) -> bool:
        """Existence and (``verify``) size/sha256 before reading; False if the unit is skipped."""
        if not unit.path.is_file():
            self._unit_problem("missing_shard", unit, st, owner, self._lost(unit, st), "file is missing")
            return False
        if not getattr(self.config, "verify", False) or unit.sha256 is None:
            return True
        stat = unit.path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(str(unit.path)) == stamp:
            return True
        if unit.bytes is not None and stat.st_size != unit.bytes:
            if stat.st_size < unit.bytes:
                self._count("truncated_shard", st, owner)
            self._unit_problem("sha_mismatch", unit, st, owner, self._lost(unit, st),
                               f"size {stat.st_size} bytes, manifest says {unit.bytes}"
                               + (" (truncated)" if stat.st_size < unit.bytes else ""))
            return False
        digest = file_sha256(unit.path)
        if digest != unit.sha256:
            self._unit_problem("sha_mismatch", unit, st, owner, self._lost(unit, st),
                               f"sha256 mismatch: manifest {unit.sha256}, file {digest}")
            return False
        self._verified[str(unit.path)] = stamp
        return True

    def _count(self, reason: str, st: dict[str, Any], owner: bool, n: int = 1) -> None:
        if owner:
            st["counters"][reason] += n

    def _unit_problem(self, reason: str, unit: Unit, st: dict[str, Any], owner: bool, lost: int,
                      message: str) -> None:
        st["offset"] = None
        st["unit_failed"] = True
        if self.config.on_bad_sample == "raise":
            raise DataError(message + (f"; {lost} of its {unit.count} samples would be lost"
                                       if lost else ""), reason=reason, url=unit.url)
        self._count(reason, st, owner)
        self._count("lost_samples", st, owner, lost)
        if owner:
            text = f"shard {unit.url}: {message}; skipped ({reason}, {lost} samples lost)"
            self._problems.append(text)
            logger.warning("%s", text)

    def _accept(self, record: Record, unit: Unit, st: dict[str, Any]) -> dict | None:
        try:
            decoded = self._decode(record, unit)
            if decoded is None:
                return None
            sample, events = decoded
        except DataError as exc:
            if self.config.on_bad_sample == "raise":
                raise exc.at(unit.url, record.key) from None
            st["counters"][exc.reason] = st["counters"].get(exc.reason, 0) + 1
            self._log_sample(exc.at(unit.url, record.key))
            return None
        for event in events:
            st["counters"][event] += 1
        if not self._keep(sample):
            st["counters"]["filtered"] += 1
            return None
        sample["__key__"] = record.key
        sample["__url__"] = unit.url
        return sample

    def _keep(self, sample: dict) -> bool:
        return True

    def _log_sample(self, exc: DataError) -> None:
        text = f"skipped bad sample ({exc.reason}): {exc}"
        self._problems.append(text)
        seen = self._logged.get(exc.reason, 0)
        self._logged[exc.reason] = seen + 1
        if seen < _LOGGED_PER_REASON:
            logger.warning("%s%s", text, " (further ones of this reason are only counted)"
                           if seen == _LOGGED_PER_REASON - 1 else "")
