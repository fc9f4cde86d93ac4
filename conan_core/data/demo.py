"""The bundled real demo corpus: every split of the recipe, built offline from installed text.

Sources (nothing downloaded, nothing invented; see :mod:`conan_core.data.demo_python` and
:mod:`conan_core.data.demo_cldr`):

* the Python standard library's docstrings and ``pydoc_data.topics`` (English);
* CLDR display names of territories, languages, currencies and scripts in the 26 languages of
  RECIPE §6 (the ``babel`` package), with English records made of CLDR facts.

Layout written under ``out_dir``::

    pretrain/      text shards    docstrings, language-reference chunks, CLDR records, name lists
    sft/           pairs shards   task "sft": query = instruction + "\\n" + input, pos = output
                                  (also the weak stage's pairs)
    supervised/    pairs shards   7 hard negatives each; tasks "retrieval", "clr", "classification"
    sts/           sts shards     graded pairs (score scale below)
    eval/          held-out JSONL retrieval/, cross_lingual/, sts.jsonl, classification.jsonl
    parallel.jsonl                training-side CLDR translations {"lang", "text", "en"}
    demo_summary.json             counts per split, task and language

Held-out split: an item (a stdlib object, a CLDR entity) is in eval when
``sha256(f"{seed}:{key}")`` falls in the first ``eval_fraction`` of the hash range; training
splits never use eval items, and docstrings shared by several objects are kept once, so no text
is on both sides.

STS scores (no graded human similarity data exists offline, so the score is a documented proxy
from the structure of the sources, 0..5):

====  =========================================================================================
5.0   the same CLDR name in two different languages (human translations of one string)
3.0   summaries of two functions/methods with the same name in different modules (``dumps``)
2.0   summaries of two methods of the same class
1.0   two summaries from the same module, or two CLDR names of the same category (two countries)
0.0   two texts from different top-level modules / different sources
====  =========================================================================================

Sizes at ``scale=1``: about 4k pretraining texts, 1.5k SFT pairs, 1.9k supervised pairs, 1k STS
pairs and a few hundred eval queries per set; ``scale`` multiplies every count (capped by what
the sources hold).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from conan_core.data.clr import PAPER_LANG_SHARES, assign_clr
from conan_core.data.demo_cldr import CldrItem, cldr_items, language_name, related
from conan_core.data.demo_python import PyItem, cut, paragraphs_chunks, pydoc_topics, python_items

NUM_NEGATIVES = 7  # RECIPE §2.4
#: base counts at scale 1 (each multiplied by ``scale``, capped by the available items)
SIZES = {
    "pretrain_python": 2200, "pretrain_topics": 400, "pretrain_records": 800, "pretrain_names": 800,
    "sft_python": 800, "sft_topics": 80, "sft_translate": 400, "sft_records": 300,
    "retrieval": 800, "clr": 500, "cls_module": 300, "cls_lang": 300,
    "sts_level": 200,
    "eval_retrieval": 300, "eval_cross_lingual": 400, "eval_sts_level": 60, "eval_cls": 150,
}
CLASSIFICATION_MODULES = 12  # the most documented top-level modules become the labels
SUMMARY_CHARS = (20, 300)
MIN_BODY_CHARS = 80
NAMES_PER_LIST = 12
NAMES_PER_CLS_TEXT = 6
CATEGORY_PROMPTS = {"territory": "Describe this country or region.", "language": "Describe this language.",
                    "currency": "Describe this currency.", "script": "Describe this writing system."}
SPLITS = ("pretrain", "sft", "supervised", "sts")


def in_eval(key: str, seed: int, fraction: float) -> bool:
    """Deterministic held-out membership of an item key."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return h < fraction * 2**64


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"demo:{seed}:{purpose}")


def _take(rng: random.Random, items: list, n: int) -> list:
    """``n`` items sampled without replacement (all of them, shuffled, when fewer)."""
    items = list(items)
    rng.shuffle(items)
    return items[:n]


def _retrievable(it: PyItem) -> bool:
    return SUMMARY_CHARS[0] <= len(it.summary) <= SUMMARY_CHARS[1] and len(it.body) >= MIN_BODY_CHARS


def _doc_text(it: PyItem) -> str:
    """Document form of an item: signature + body when the summary serves as the query, else the
    signature + whole docstring."""
    return it.document(with_summary=not _retrievable(it))


class _Builder:
    def __init__(self, seed: int, scale: float, eval_fraction: float, langs: list[str]):
        self.seed, self.scale, self.langs = seed, scale, langs
        py = python_items()
        cl = cldr_items(langs)
        self.py_train = [it for it in py if not in_eval("py:" + it.key, seed, eval_fraction)]
        self.py_eval = [it for it in py if in_eval("py:" + it.key, seed, eval_fraction)]
        self.cl_train = [it for it in cl if not in_eval("cldr:" + it.key, seed, eval_fraction)]
        self.cl_eval = [it for it in cl if in_eval("cldr:" + it.key, seed, eval_fraction)]
        self.topics = pydoc_topics()
        counts = Counter(it.top for it in py)
        self.labels = [m for m, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:CLASSIFICATION_MODULES]

    def n(self, name: str) -> int:
        return max(1, round(SIZES[name] * self.scale))

    # ------------------------------------------------------------------ pretraining text
    def pretrain(self) -> list[dict]:
        r = _rng(self.seed, "pretrain")
        texts = [f"{it.signature}\n\n{cut(it.doc, 3000)}" for it in _take(r, self.py_train, self.n("pretrain_python"))]
        chunks = [c for _, text in self.topics for c in paragraphs_chunks(text)]
        texts += _take(r, chunks, self.n("pretrain_topics"))
        texts += [it.doc for it in _take(r, self.cl_train, self.n("pretrain_records"))]
        lists = []
        for lang in self.langs:
            for cat in sorted({it.category for it in self.cl_train}):
                names = [it.names[lang] for it in self.cl_train if it.category == cat and lang in it.names]
                lists += ["\n".join(names[i:i + NAMES_PER_LIST]) for i in range(0, len(names), NAMES_PER_LIST)]
        texts += _take(r, lists, self.n("pretrain_names"))
        r.shuffle(texts)
        return [{"text": t} for t in texts]

    # ------------------------------------------------------------------ SFT pairs
    def sft(self) -> list[dict]:
        r = _rng(self.seed, "sft")
        out = []

        def pair(instruction: str, inp: str, output: str, ident: str) -> dict:
            return {"query": f"{instruction}\n{inp}", "pos": output, "neg": [], "task": "sft", "lang": "en",
                    "instruction": instruction, "id": ident}

        for it in _take(r, self.py_train, self.n("sft_python")):
            out.append(pair("Explain what this Python API does.", it.signature, cut(it.doc, 1500), f"sft:py:{it.key}"))
        for name, text in _take(r, self.topics, self.n("sft_topics")):
            out.append(pair("Explain this topic of the Python language reference.", name,
                            paragraphs_chunks(text)[0], f"sft:topic:{name}"))
        options = [(it, lang) for it in self.cl_train for lang in self.langs if lang != "en" and lang in it.names]
        for it, lang in _take(r, options, self.n("sft_translate")):
            out.append(pair(f"Translate from English to {language_name(lang)}.", it.en, it.names[lang],
                            f"sft:translate:{lang}:{it.key}"))
        for it in _take(r, self.cl_train, self.n("sft_records")):
            out.append(pair(CATEGORY_PROMPTS[it.category], it.en, it.doc, f"sft:record:{it.key}"))
        r.shuffle(out)
        return out

    # ------------------------------------------------------------------ supervised pairs
    def _py_negatives(self, it: PyItem, pool_by: dict, everything: list[PyItem], r: random.Random) -> list[str]:
        pos = _doc_text(it)
        negs: list[str] = []
        for group in (pool_by["module"][it.module], pool_by["top"][it.top], everything):
            cands = [x for x in group if x.key != it.key]
            if len(cands) > 60:
                cands = r.sample(cands, 60)
            else:
                r.shuffle(cands)
            for x in cands:
                text = _doc_text(x)
                if text != pos and text not in negs:
                    negs.append(text)
                if len(negs) == NUM_NEGATIVES:
                    return negs
        return negs

    def retrieval(self) -> list[dict]:
        r = _rng(self.seed, "retrieval")
        pool_by = {"module": defaultdict(list), "top": defaultdict(list)}
        for it in self.py_train:
            pool_by["module"][it.module].append(it)
            pool_by["top"][it.top].append(it)
        chosen = _take(r, [it for it in self.py_train if _retrievable(it)], self.n("retrieval"))
        return [{"query": it.summary, "pos": _doc_text(it), "task": "retrieval", "lang": "en",
                 "neg": self._py_negatives(it, pool_by, self.py_train, r), "id": f"retrieval:{it.key}"}
                for it in chosen]

    def parallel_rows(self) -> list[dict]:
        return [{"lang": lang, "text": it.names[lang], "en": it.en}
                for it in self.cl_train for lang in self.langs if lang != "en" and lang in it.names]

    def clr(self) -> tuple[list[dict], dict]:
        from conan_core.translators.lookup import LookupTranslator

        r = _rng(self.seed, "clr")
        base = []
        for it in _take(r, self.cl_train, self.n("clr")):
            near = related(it, self.cl_train)[:3 * NUM_NEGATIVES]
            negs = [x.doc for x in r.sample(near, min(NUM_NEGATIVES, len(near)))]
            base.append({"query": it.en, "pos": it.doc, "neg": negs, "task": "retrieval", "lang": "en",
                         "id": f"clr:{it.key}"})
        translator = LookupTranslator(LookupTranslator.Config(path="<demo parallel rows>"),
                                      rows=self.parallel_rows())
        shares = {lang: PAPER_LANG_SHARES.get(lang, 1.0) for lang in self.langs}
        return assign_clr(base, translator, shares, seed=self.seed)

    def classification(self, py_items: list[PyItem], cl_items: list[CldrItem], n_mod: int, n_lang: int,
                       r: random.Random, with_negatives: bool = True) -> list[dict]:
        out = []
        labelled = [it for it in py_items if it.top in self.labels]
        for it in _take(r, labelled, n_mod):
            out.append({"text": cut(it.doc, 800), "label": it.top,
                        "others": [lab for lab in self.labels if lab != it.top], "id": f"cls:py:{it.key}"})
        lang_labels = {lang: language_name(lang) for lang in self.langs}
        texts = []
        for lang in self.langs:
            names = [it.names[lang] for it in cl_items if lang in it.names]
            _rng(self.seed, f"cls:{lang}").shuffle(names)
            for i in range(0, len(names) - NAMES_PER_CLS_TEXT + 1, NAMES_PER_CLS_TEXT):
                texts.append((lang, i, ", ".join(names[i:i + NAMES_PER_CLS_TEXT])))
        for lang, i, text in _take(r, texts, n_lang):
            out.append({"text": text, "label": lang_labels[lang],
                        "others": [v for k, v in lang_labels.items() if k != lang], "id": f"cls:lang:{lang}:{i}"})
        if not with_negatives:
            return [{"text": o["text"], "label": o["label"]} for o in out]
        return [{"query": o["text"], "pos": o["label"], "neg": r.sample(o["others"], NUM_NEGATIVES),
                 "task": "classification", "lang": "en" if o["id"].startswith("cls:py") else o["id"].split(":")[2],
                 "label": o["label"], "id": o["id"]} for o in out]

    # ------------------------------------------------------------------ STS
    def sts(self, py_items: list[PyItem], cl_items: list[CldrItem], per_level: int, r: random.Random) -> list[dict]:
        out: list[dict] = []
        seen: set[tuple[str, str]] = set()

        def add(a: str, b: str, score: float) -> bool:
            if a == b or (a, b) in seen or (b, a) in seen:
                return False
            seen.add((a, b))
            out.append({"s1": a, "s2": b, "score": score})
            return True

        def fill(candidates: Iterable[tuple[str, str]], score: float, n: int) -> None:
            done = 0
            for a, b in candidates:
                if done >= n:
                    return
                done += add(a, b, score)

        def pairs_within(groups: dict, tries: int):
            keys = sorted(k for k, v in groups.items() if len(v) > 1)
            for _ in range(tries):
                if not keys:
                    return
                a, b = r.sample(groups[r.choice(keys)], 2)
                yield a, b

        tries = 20 * per_level
        fill(((it.names[a], it.names[b]) for it in (r.choice(cl_items) for _ in range(tries))
              for a, b in [r.sample(sorted(it.names), 2)]), 5.0, per_level)
        summaries = [it for it in py_items if SUMMARY_CHARS[0] <= len(it.summary) <= SUMMARY_CHARS[1]]
        by_name, by_class, by_module, by_top = (defaultdict(list) for _ in range(4))
        for it in summaries:
            if it.kind in ("function", "method"):
                by_name[it.name].append(it)
            if it.owner:
                by_class[(it.module, it.owner)].append(it)
            by_module[it.module].append(it)
            by_top[it.top].append(it)
        fill(((a.summary, b.summary) for a, b in pairs_within(by_name, tries) if a.module != b.module), 3.0, per_level)
        fill(((a.summary, b.summary) for a, b in pairs_within(by_class, tries)), 2.0, per_level)
        fill(((a.summary, b.summary) for a, b in pairs_within(by_module, tries) if a.owner != b.owner or not a.owner),
             1.0, per_level - per_level // 2)
        by_cat = defaultdict(list)
        for it in cl_items:
            by_cat[it.category].append(it)
        fill(((a.names[r.choice(sorted(a.names))], b.names[r.choice(sorted(b.names))])
              for a, b in pairs_within(by_cat, tries)), 1.0, per_level // 2)
        tops = sorted(by_top)

        def unrelated():
            for _ in range(tries):
                if r.random() < 0.5 and len(tops) > 1:
                    ta, tb = r.sample(tops, 2)
                    yield r.choice(by_top[ta]).summary, r.choice(by_top[tb]).summary
                else:
                    c = r.choice(cl_items)
                    yield r.choice(summaries).summary, c.names[r.choice(sorted(c.names))]
        fill(unrelated(), 0.0, per_level)
        r.shuffle(out)
        return out

    # ------------------------------------------------------------------ eval
    def eval_sets(self) -> dict:
        r = _rng(self.seed, "eval")
        queries, corpus, qrels = [], [], []
        # a summary that some training object also has would put the same query on both sides
        seen_q: set[str] = {it.summary for it in self.py_train}
        for it in _take(r, [it for it in self.py_eval if _retrievable(it)], 10**9):
            if len(queries) >= self.n("eval_retrieval"):
                break
            if it.summary in seen_q:
                continue
            seen_q.add(it.summary)
            queries.append({"id": f"q:{it.key}", "text": it.summary, "lang": "en"})
            qrels.append({"qid": f"q:{it.key}", "doc_id": f"d:{it.key}", "score": 1})
        docs_seen: set[str] = set()
        for it in self.py_eval:
            text = _doc_text(it)
            if text not in docs_seen:
                docs_seen.add(text)
                corpus.append({"id": f"d:{it.key}", "text": text})
        doc_ids = {d["id"] for d in corpus}
        qrels = [q for q in qrels if q["doc_id"] in doc_ids]
        kept = {q["qid"] for q in qrels}
        queries = [q for q in queries if q["id"] in kept]
        retrieval = (sorted(queries, key=lambda q: q["id"]), corpus, sorted(qrels, key=lambda q: q["qid"]))

        xq, xrels = [], []
        train_names = {name for it in self.cl_train for name in it.names.values()}
        seen_x: set[tuple[str, str]] = set()
        options = []
        for it in self.cl_eval:
            langs = [lang for lang in sorted(it.names) if lang != "en" and it.names[lang].casefold() != it.en.casefold()]
            for lang in r.sample(langs, min(2, len(langs))):
                options.append((it, lang))
        for it, lang in _take(r, options, self.n("eval_cross_lingual")):
            if (lang, it.names[lang]) in seen_x or it.names[lang] in train_names:
                continue
            seen_x.add((lang, it.names[lang]))
            qid = f"q:{lang}:{it.key}"
            xq.append({"id": qid, "text": it.names[lang], "lang": lang})
            xrels.append({"qid": qid, "doc_id": f"d:{it.key}", "score": 1})
        xcorpus = [{"id": f"d:{it.key}", "text": it.doc} for it in self.cl_eval]
        cross = (sorted(xq, key=lambda q: q["id"]), xcorpus, sorted(xrels, key=lambda q: q["qid"]))
        sts = self.sts(self.py_eval, self.cl_eval, self.n("eval_sts_level"), _rng(self.seed, "eval_sts"))
        cls = self.classification(self.py_eval, self.cl_eval, self.n("eval_cls"), self.n("eval_cls"),
                                  _rng(self.seed, "eval_cls"), with_negatives=False)
        return {"retrieval": retrieval, "cross_lingual": cross, "sts": sts, "classification": cls}


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _pair_counts(samples: list[dict]) -> dict:
    by_task = Counter(s["task"] for s in samples)
    by_lang = defaultdict(Counter)
    for s in samples:
        by_lang[s["task"]][s["lang"]] += 1
    return {"count": len(samples), "tasks": dict(sorted(by_task.items())),
            "langs": {t: dict(sorted(c.items())) for t, c in sorted(by_lang.items())}}


def build_demo(out_dir: str | Path, *, seed: int = 0, scale: float = 1.0, eval_fraction: float = 0.15,
               shard_size: int = 1000, langs: list[str] | None = None, verbose: bool = False) -> dict:
    """Build the demo corpus under ``out_dir`` (replacing the splits it writes); returns the summary.

    Deterministic: the same ``seed``, ``scale``, Python version and babel version give
    byte-identical shards. ``langs``: languages of the multilingual parts (default: the 26 of
    RECIPE §6). The summary (also ``demo_summary.json``) has counts per split, task and language;
    the returned dict additionally holds ``seconds``.
    """
    from conan_core.data.shards import write_shards

    if scale <= 0:
        raise ValueError(f"scale={scale} must be positive")
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction} must be in (0, 1)")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SPLITS, "eval"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    langs = list(PAPER_LANG_SHARES) if langs is None else ["en"] + [lang for lang in langs if lang != "en"]
    b = _Builder(seed, scale, eval_fraction, langs)

    pretrain = b.pretrain()
    sft = b.sft()
    clr, clr_summary = b.clr()
    supervised = b.retrieval() + clr + b.classification(b.py_train, b.cl_train, b.n("cls_module"),
                                                        b.n("cls_lang"), _rng(seed, "cls"))
    _rng(seed, "supervised").shuffle(supervised)
    sts = b.sts(b.py_train, b.cl_train, b.n("sts_level"), _rng(seed, "sts"))
    write_shards(pretrain, out / "pretrain", kind="text", shard_size=shard_size, prefix="pretrain")
    write_shards(sft, out / "sft", kind="pairs", shard_size=shard_size, prefix="sft")
    write_shards(supervised, out / "supervised", kind="pairs", shard_size=shard_size, prefix="supervised")
    write_shards(sts, out / "sts", kind="sts", shard_size=shard_size, prefix="sts")
    _write_jsonl(out / "parallel.jsonl", b.parallel_rows())

    ev = b.eval_sets()
    eval_counts = {}
    for name in ("retrieval", "cross_lingual"):
        q, c, rels = ev[name]
        _write_jsonl(out / "eval" / name / "queries.jsonl", q)
        _write_jsonl(out / "eval" / name / "corpus.jsonl", c)
        _write_jsonl(out / "eval" / name / "qrels.jsonl", rels)
        eval_counts[name] = {"queries": len(q), "corpus": len(c), "qrels": len(rels),
                             "langs": dict(sorted(Counter(x["lang"] for x in q).items()))}
    _write_jsonl(out / "eval" / "sts.jsonl", ev["sts"])
    _write_jsonl(out / "eval" / "classification.jsonl", ev["classification"])
    eval_counts["sts"] = {"pairs": len(ev["sts"]),
                          "scores": dict(sorted(Counter(str(s["score"]) for s in ev["sts"]).items()))}
    eval_counts["classification"] = {"texts": len(ev["classification"]),
                                     "labels": len({c["label"] for c in ev["classification"]})}

    import babel

    summary = {
        "seed": seed, "scale": scale, "eval_fraction": eval_fraction,
        "sources": {"python": sys.version.split()[0], "babel_cldr": babel.__version__,
                    "stdlib_items": {"train": len(b.py_train), "eval": len(b.py_eval)},
                    "cldr_items": {"train": len(b.cl_train), "eval": len(b.cl_eval)},
                    "pydoc_topics": len(b.topics)},
        "pretrain": {"count": len(pretrain)},
        "sft": _pair_counts(sft),
        "supervised": _pair_counts(supervised),
        "sts": {"count": len(sts), "scores": dict(sorted(Counter(str(s["score"]) for s in sts).items()))},
        "clr": {k: clr_summary[k] for k in ("queries", "counts", "swapped", "redrawn", "kept_source")},
        "parallel_rows": len(b.parallel_rows()),
        "eval": eval_counts,
        "classification_labels": b.labels,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    result = dict(summary, seconds=round(time.perf_counter() - t0, 2))
    if verbose:
        print(format_summary(result))
    return result


def format_summary(summary: dict) -> str:
    """A short human-readable table of a demo summary."""
    ev = summary["eval"]
    lines = [
        f"demo corpus (seed {summary['seed']}, scale {summary['scale']}) built in {summary.get('seconds', '?')} s",
        f"  sources: Python {summary['sources']['python']} stdlib docstrings "
        f"({sum(summary['sources']['stdlib_items'].values())} objects), {summary['sources']['pydoc_topics']} "
        f"pydoc topics, CLDR via babel {summary['sources']['babel_cldr']} "
        f"({sum(summary['sources']['cldr_items'].values())} entities)",
        f"  pretrain:   {summary['pretrain']['count']} texts",
        f"  sft:        {summary['sft']['count']} pairs",
        f"  supervised: {summary['supervised']['count']} pairs " +
        ", ".join(f"{t} {n}" for t, n in summary["supervised"]["tasks"].items()),
        "  clr langs:  " + " ".join(f"{k}:{v}" for k, v in summary["clr"]["counts"].items()) +
        f" (swapped {summary['clr']['swapped']}, redrawn {summary['clr']['redrawn']}, "
        f"kept source {summary['clr']['kept_source']})",
        f"  sts:        {summary['sts']['count']} pairs, scores {summary['sts']['scores']}",
        f"  eval:       retrieval {ev['retrieval']['queries']} queries / {ev['retrieval']['corpus']} docs; "
        f"cross-lingual {ev['cross_lingual']['queries']} queries in {len(ev['cross_lingual']['langs'])} langs / "
        f"{ev['cross_lingual']['corpus']} docs; sts {ev['sts']['pairs']} pairs; "
        f"classification {ev['classification']['texts']} texts, {ev['classification']['labels']} labels",
    ]
    return "\n".join(lines)
