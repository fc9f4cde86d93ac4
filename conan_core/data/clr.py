"""Cross-lingual retrieval (CLR) data: translate only the queries of a retrieval set (RECIPE §6).

Documents (``pos`` and ``neg``) stay in their language; each query gets a target language drawn by
the language shares (RECIPE Table 7, :data:`PAPER_LANG_SHARES`, normalised to sum to 1).

Assignment is *stratified*, not independent draws, so the output shares match the request to
within one query: the number of queries per language is the largest-remainder rounding of
``share * N``, and the languages are dealt to the shuffled queries.

Missing translations (policy), for a query whose translator returns None for its language L:

1. **swap**: up to ``MAX_SWAP_TRIES`` already translated queries (random order) are tried; the
   first one that has a translation into L while our query has one into its language M trades
   languages with it (both quotas stay exact);
2. **re-draw**: otherwise a language is drawn among those that still have room in their quota
   (probability proportional to the room left), each tried at most once; when none of them has a
   translation, among all languages by share;
3. **keep**: when no language at all has one, the query keeps its source language.

``swapped``, ``redrawn`` and ``kept_source`` count these cases in the summary; only re-drawn and
kept queries move the output shares away from the quotas.

Every query's own language must be known (``lang`` of the pair; the shard writer's default
``"und"`` counts as unknown): a translator cannot translate from an unknown language, so a pair
without one is an error naming its file and line (JSONL) or shard and sample key, unless the
caller states the language of such queries (``src_lang``, ``conan data clr --src-lang``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from conan_core.errors import DataError

#: RECIPE §6 / paper Table 7 language shares in percent (they sum to 106 as printed).
PAPER_LANG_SHARES: dict[str, float] = {
    "en": 25, "zh": 12, "es": 8, "fr": 6, "ja": 6, "de": 5, "ru": 5, "it": 4, "pt": 4, "ar": 3,
    "ko": 3, "bn": 2, "da": 2, "sv": 2, "th": 2, "ms": 2, "tr": 2, "vi": 2, "nl": 2, "pl": 2,
    "hi": 2, "km": 1, "fi": 1, "he": 1, "hu": 1, "no": 1,
}


#: translated queries tried as swap partners for one query without a translation
MAX_SWAP_TRIES = 64
#: ``lang`` values that do not name a language (``und`` is the pairs schema's default)
UNKNOWN_LANGS = ("", "und")


class CLRError(DataError):
    """Bad CLR builder input (language shares, translation source, retrieval shards)."""


def normalize_shares(langs: Mapping[str, float]) -> dict[str, float]:
    """Shares scaled to sum to 1, in the given order; every share must be finite and ≥ 0."""
    if not langs:
        raise CLRError("no languages given; pass shares such as de:5,fr:6 (any positive scale)")
    bad = {k: v for k, v in langs.items() if not isinstance(v, (int, float)) or not v >= 0 or v == float("inf")}
    if bad:
        raise CLRError(f"language shares must be finite numbers >= 0, got {bad}")
    total = float(sum(langs.values()))
    if total <= 0:
        raise CLRError(f"language shares sum to {total}; at least one must be positive")
    return {k: float(v) / total for k, v in langs.items()}


def parse_shares(spec: str) -> dict[str, float]:
    """``"de:5,fr:6"`` -> {"de": 5.0, "fr": 6.0}; ``"paper"`` -> :data:`PAPER_LANG_SHARES`."""
    if spec.strip().lower() == "paper":
        return dict(PAPER_LANG_SHARES)
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        lang, sep, value = part.partition(":")
        try:
            share = float(value)
        except ValueError:
            share = None
        if not sep or not lang.strip() or share is None:
            raise CLRError(f"bad language share {part!r} in {spec!r}; write LANG:SHARE pairs, "
                           "e.g. en:25,zh:12,de:5 (or 'paper' for RECIPE Table 7)")
        out[lang.strip()] = share
    return out


def quotas(shares: Mapping[str, float], n: int) -> dict[str, int]:
    """Largest-remainder rounding of ``shares * n`` (shares summing to 1): integers summing to ``n``,
    each within 1 of ``share * n``. Ties go to the earlier language."""
    raw = {k: v * n for k, v in shares.items()}
    out = {k: int(v) for k, v in raw.items()}
    order = sorted(raw, key=lambda k: -(raw[k] - out[k]))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def _weighted_choice(rng: random.Random, weights: Mapping[str, float]) -> str | None:
    items = [(k, w) for k, w in weights.items() if w > 0]
    if not items:
        return None
    total = sum(w for _, w in items)
    r = rng.random() * total
    for k, w in items:
        r -= w
        if r < 0:
            return k
    return items[-1][0]


def assign_clr(samples: list[dict], translator, langs: Mapping[str, float] | None = None, *,
               seed: int = 0, src_lang: str | None = None) -> tuple[list[dict], dict]:
    """Translate the queries of retrieval ``samples`` (pairs dicts) by the language shares.

    Each output sample is a copy with ``query`` translated, ``lang`` = target language,
    ``task = "clr"`` and ``src_lang`` = the original query language (the sample's ``lang``, or
    ``src_lang`` when it has none); ``pos``/``neg`` are untouched. Output order = input order.
    A sample with no language (``lang`` missing, empty or ``und``) while ``src_lang`` is None
    raises :class:`CLRError` naming its index and id. Returns (samples, summary); the summary
    holds requested and achieved shares, counts per language, ``redrawn`` and ``kept_source``.
    """
    shares = normalize_shares(PAPER_LANG_SHARES if langs is None else langs)
    n = len(samples)
    rng = random.Random(f"clr:{seed}")
    quota = quotas(shares, n)
    slots = [lang for lang, q in quota.items() for _ in range(q)]
    order = list(range(n))
    rng.shuffle(order)
    assigned: dict[int, str] = {i: slots[j] for j, i in enumerate(order)}
    sources = []
    for i, s in enumerate(samples):
        lang = s.get("lang") if s.get("lang") not in (None, *UNKNOWN_LANGS) else src_lang
        if lang is None:
            raise CLRError(f"sample {i} (id {s.get('id', '-')!r}) has no language (lang {s.get('lang')!r}); "
                           "set its lang field or pass src_lang for queries without one")
        sources.append(lang)

    def translate_many(idx: list[int], tgt: str) -> list[str | None]:
        out: list[str | None] = [None] * len(idx)
        by_src: dict[str, list[int]] = {}
        for pos, i in enumerate(idx):
            by_src.setdefault(sources[i], []).append(pos)
        for src, positions in by_src.items():
            if src == tgt:
                for p in positions:
                    out[p] = samples[idx[p]]["query"]
                continue
            got = translator.translate([samples[idx[p]]["query"] for p in positions], src, tgt)
            if len(got) != len(positions):
                raise CLRError(f"translator {type(translator).__name__} returned {len(got)} texts for "
                               f"{len(positions)} queries ({src}->{tgt})")
            for p, text in zip(positions, got):
                out[p] = text if isinstance(text, str) and text.strip() else None
        return out

    result: dict[int, tuple[str, str]] = {}
    failed: list[int] = []
    for lang in quota:
        idx = [i for i in order if assigned[i] == lang]
        for i, text in zip(idx, translate_many(idx, lang)):
            if text is None:
                failed.append(i)
            else:
                result[i] = (lang, text)

    # Missing translations, first remedy: swap languages with a translated query that can take
    # this language, so every quota stays exact.
    success = [i for i in order if i in result]
    swapped = 0
    still: list[int] = []
    for i in failed:
        lang = assigned[i]
        done = False
        for j in rng.sample(success, min(MAX_SWAP_TRIES, len(success))):
            other = result[j][0]
            if other == lang:
                continue
            tj = translate_many([j], lang)[0]
            if tj is None:
                continue
            ti = translate_many([i], other)[0]
            if ti is None:
                continue
            result[j], result[i] = (lang, tj), (other, ti)
            success.append(i)
            swapped += 1
            done = True
            break
        if not done:
            still.append(i)

    # Second remedy: re-draw a language, first among those with room left in their quota.
    filled = {lang: 0 for lang in quota}
    for lang, _ in result.values():
        filled[lang] += 1
    redrawn = kept_source = 0
    for i in still:
        tried = {assigned[i]}
        choice = None
        for weights_of in (lambda: {k: quota[k] - filled[k] for k in quota if k not in tried},
                           lambda: {k: shares[k] for k in quota if k not in tried}):
            while choice is None:
                lang = _weighted_choice(rng, weights_of())
                if lang is None:
                    break
                tried.add(lang)
                text = translate_many([i], lang)[0]
                if text is not None:
                    choice = (lang, text)
            if choice is not None:
                break
        if choice is None:
            choice = (sources[i], samples[i]["query"])
            kept_source += 1
        else:
            redrawn += 1
        result[i] = choice
        filled[choice[0]] = filled.get(choice[0], 0) + 1

    out = []
    for i, sample in enumerate(samples):
        lang, text = result[i]
        new = dict(sample)
        new.update(query=text, lang=lang, task="clr", src_lang=sources[i])
        out.append(new)
    counts = {lang: filled.get(lang, 0) for lang in sorted(set(filled) | set(quota))}
    summary = {"queries": n, "requested": dict(shares), "counts": counts,
               "shares": {k: (v / n if n else 0.0) for k, v in counts.items()},
               "swapped": swapped, "redrawn": redrawn, "kept_source": kept_source}
    return out, summary


def translator_from(translations) -> "Translator":  # noqa: F821 (imported lazily)
    """A :class:`~conan_core.translators.base.Translator` from ``translations``: a Translator
    itself, a spec dict ``{"type": KEY, ...}`` built through the ``translators`` registry, or a
    parallel JSONL path (the ``lookup`` translator)."""
    from conan_core.translators.base import Translator

    if isinstance(translations, Translator):
        return translations
    from conan_core.registries import REGISTRIES

    if isinstance(translations, Mapping):
        return REGISTRIES["translators"].build(dict(translations), "translator")
    if not isinstance(translations, (str, Path)):
        raise CLRError(f"translations must be a parallel JSONL path, a translator spec dict or a Translator, "
                       f"got {type(translations).__name__}")
    return REGISTRIES["translators"].build({"type": "lookup", "path": str(translations)})


def read_pairs(directory: str | Path) -> Iterable[dict]:
    """Validated pairs samples of a shard directory, in manifest order (a bad sample raises)."""
    for _, sample in iter_retrieval(directory):
        yield sample


def iter_retrieval(path: str | Path) -> Iterator[tuple[str, dict]]:
    """``(where, sample)`` for each validated pairs sample of a shard directory or a JSONL file.

    ``where`` locates the sample for error messages: ``FILE:LINE`` in a JSONL file,
    ``SHARD.tar (sample KEY)`` in shards. A bad sample raises with that location.
    """
    from conan_core.data.samples import DataError, decode_members, validate_sample
    from conan_core.data.shards import iter_tar_groups, read_manifest

    path = Path(path)
    if path.is_file():
        from conan_core.jsonl import iter_jsonl

        for lineno, obj in iter_jsonl(path, error=CLRError):
            where = f"{path}:{lineno}"
            try:
                sample, _ = validate_sample(obj, "pairs")
            except DataError as exc:
                raise CLRError(f"{where}: {exc.detail}") from None
            # the schema fills a missing lang with "und"; either way the language is unknown
            yield where, sample
        return
    if not path.is_dir():
        raise CLRError(f"{path}: no such retrieval set; pass a pairs shard directory or a JSONL file of pairs")
    manifest = read_manifest(path)
    if manifest.kind != "pairs":
        raise CLRError(f"{path}: shards of kind {manifest.kind!r}; the CLR builder needs a "
                       "retrieval set of kind 'pairs' (query, pos, neg)")
    for shard in manifest.shards:
        tar = manifest.path(shard)
        for group in iter_tar_groups(tar):
            try:
                sample, _ = decode_members(group.members)
                sample, _ = validate_sample(sample, "pairs")
            except DataError as exc:
                raise exc.at(str(tar), group.key) from None
            yield f"{tar} (sample {group.key})", sample


def build_clr(retrieval_dir: str | Path, translations, langs: Mapping[str, float] | None,
              out_dir: str | Path, seed: int = 0, *, shard_size: int = 1000,
              tasks: Iterable[str] | None = ("retrieval",), src_lang: str | None = None) -> dict:
    """Write CLR pairs shards to ``out_dir`` from the retrieval set ``retrieval_dir``.

    ``retrieval_dir``: a pairs shard directory or a JSONL file of pairs. ``translations``: a
    parallel JSONL file (``{"lang", "text", "en"}`` per line, read by the ``lookup`` translator),
    a translator spec dict (``{"type": "gettext"}``) or any
    :class:`~conan_core.translators.base.Translator`. ``langs``: shares per language (any scale;
    None = :data:`PAPER_LANG_SHARES`). Only samples whose ``task`` is in ``tasks`` are used (None =
    all). A pair without a language raises :class:`CLRError` naming the first one's file and line
    (or shard and sample key) unless ``src_lang`` gives the language of such queries. Writes
    ``clr_summary.json`` beside the shards and returns the summary (see :func:`assign_clr`) plus
    ``written``.
    """
    from conan_core.data.shards import write_shards

    keep = None if tasks is None else set(tasks)
    located = [(where, s) for where, s in iter_retrieval(retrieval_dir) if keep is None or s.get("task") in keep]
    if not located:
        raise CLRError(f"{retrieval_dir}: no samples with task in {sorted(keep or [])}; pass tasks=None "
                       "to use every pair")
    unknown = [where for where, s in located if s.get("lang") in (None, *UNKNOWN_LANGS)]
    if unknown and src_lang is None:
        raise CLRError(f"{unknown[0]}: pair has no query language (lang missing or 'und'; {len(unknown)} of "
                       f"{len(located)} pairs lack one), so its query cannot be translated. Add a lang field "
                       "to the pairs, or pass --src-lang LANG (src_lang=LANG) to state the language of the "
                       "queries without one")
    samples = [s for _, s in located]
    out, summary = assign_clr(samples, translator_from(translations), langs, seed=seed, src_lang=src_lang)
    for s in out:
        s.pop("__key__", None)
        s.pop("__url__", None)
    manifest = write_shards(out, out_dir, kind="pairs", shard_size=shard_size, prefix="clr")
    summary["written"] = manifest.count
    Path(out_dir, "clr_summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n",
                                                 encoding="utf-8")
    return summary
