"""The bundled real demo corpus: every split of the recipe, built offline from installed text.

Sources (nothing downloaded, nothing invented; the lists are declared in
:mod:`conan_core.data.demo_sources`):

* docstrings of the Python standard library and ``pydoc_data.topics`` (:mod:`.demo_python`);
* docstrings of the project's dependencies (torch, transformers, numpy, pydantic, ...);
* gettext catalogs shipped inside Django: English interface strings with their human
  translations (:mod:`.demo_gettext`), real parallel sentences;
* CLDR display names of territories, languages, currencies and scripts in the 26 languages of
  RECIPE §6 (the ``babel`` package), with English records made of CLDR facts (:mod:`.demo_cldr`).

Layout written under ``out_dir``::

    pretrain/      text shards    docstrings, language-reference chunks, CLDR records, name lists,
                                  lists of translated interface strings
    sft/           pairs shards   task "sft": query = instruction + "\\n" + input, pos = output
                                  (also the weak stage's pairs)
    supervised/    pairs shards   7 hard negatives each; tasks "retrieval", "clr", "classification"
    sts/           sts shards     graded pairs (score scale below)
    eval/          held-out JSONL (in-domain): retrieval/, cross_lingual/, sts.jsonl,
                                  classification.jsonl
    eval/out_of_domain/           the same four sets from held-out *sources*
    parallel.jsonl                training-side CLDR translations {"lang", "text", "en"}
    demo_summary.json             counts per split, source, task and language; held-out sources

Two kinds of held-out data:

* **in-domain** (``eval/``): items of trained sources held out by a hash,
  ``sha256(f"{seed}:{key}")`` in the first ``eval_fraction`` of the range. Training never uses
  them, but they come from the same packages, catalogs and CLDR categories as training text.
* **out-of-domain** (``eval/out_of_domain/``): whole sources training never reads — the held-out
  packages' docstrings (monolingual retrieval, STS), the held-out catalogs (cross-lingual
  retrieval, STS, language identification) and queries in held-out languages. Any text of these
  sets that occurs anywhere in a training split (even inside a longer text) is dropped, so a model
  cannot score there by memorising.

Docstrings shared by several objects are kept once, so no text is on both sides.

STS scores (no graded human similarity data exists offline, so the score is a documented proxy
from the structure of the sources, 0..5):

====  =========================================================================================
5.0   the same CLDR name or interface string in two languages (human translations of one string)
3.0   summaries of two functions/methods with the same name in different modules (``dumps``)
2.0   summaries of two methods of the same class
1.0   two summaries from the same module, or two CLDR names of one category / two interface
      strings of one catalog
0.0   two texts from different top-level modules / different sources
====  =========================================================================================

Sizes at ``scale=1``: about 7k pretraining texts, 2.2k SFT pairs, 2.7k supervised pairs, 1k STS
pairs and a few hundred eval queries per set; ``scale`` multiplies every count (capped by what
the sources hold).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence, Union

from conan_core.data.clr import PAPER_LANG_SHARES, assign_clr
from conan_core.data.demo_cldr import CldrItem, cldr_items, language_name, related
from conan_core.data.demo_gettext import Message, messages
from conan_core.data.demo_python import PyItem, cut, distinct_items, paragraphs_chunks, pydoc_topics, python_items
from conan_core.data.demo_sources import (
    CATALOG_PACKAGES,
    DOC_PACKAGES,
    OOD_CATALOGS,
    OOD_DOC_PACKAGES,
    OOD_LANGS,
    doc_items,
    versions,
)

#: an item with names in several languages: a CLDR entity or an interface string
Parallel = Union[CldrItem, Message]

NUM_NEGATIVES = 7  # RECIPE §2.4
#: base counts at scale 1 (each multiplied by ``scale``, capped by the available items). Retrieval
#: pairs and the docstring SFT pairs (which the weak stage reads) are 3000 each: with 1000 each the
#: tiny run reached retrieval nDCG@10 0.206 in domain / 0.120 out of domain; with 3000 (and the
#: longer weak and supervised stages of the tiny preset) about 0.41 / 0.22 (README, "Quick start").
SIZES = {
    "pretrain_python": 4400, "pretrain_topics": 400, "pretrain_records": 800, "pretrain_names": 800,
    "pretrain_messages": 600,
    "sft_python": 3000, "sft_topics": 80, "sft_translate": 400, "sft_records": 300, "sft_messages": 400,
    "retrieval": 3000, "clr": 500, "clr_messages": 400, "cls_module": 300, "cls_lang": 300, "cls_messages": 200,
    "sts_level": 200,
    "eval_retrieval": 300, "eval_corpus": 1500, "eval_cross_lingual": 400, "eval_new_lang": 40,
    "eval_sts_level": 60, "eval_cls": 150,
}
CLASSIFICATION_MODULES = 12  # the most documented top-level modules / packages become the labels
SUMMARY_CHARS = (20, 300)
MIN_BODY_CHARS = 80
NAMES_PER_LIST = 12
NAMES_PER_CLS_TEXT = 6
#: an interface string is a language-identification text when it has at least this many characters
MIN_CLS_CHARS = 20
CATEGORY_PROMPTS = {"territory": "Describe this country or region.", "language": "Describe this language.",
                    "currency": "Describe this currency.", "script": "Describe this writing system."}
SPLITS = ("pretrain", "sft", "supervised", "sts")
OOD_DIR = "out_of_domain"
_WORD = re.compile(r"\w+")


def in_eval(key: str, seed: int, fraction: float) -> bool:
    """Deterministic held-out membership of an item key."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return h < fraction * 2**64


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"demo:{seed}:{purpose}")


def _take(rng: random.Random, items: Sequence, n: int) -> list:
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


def _training_texts(splits: dict[str, list[dict]]) -> set[str]:
    """Every text field of every training sample (pretrain text, pair query/pos/neg, STS s1/s2)."""
    out: set[str] = set()
    for samples in splits.values():
        for s in samples:
            for k in ("text", "query", "pos", "s1", "s2"):
                if isinstance(s.get(k), str):
                    out.add(s[k])
            out.update(s.get("neg") or ())
    return out


class Unseen:
    """Membership test "does ``text`` occur nowhere in the training texts" (substring, exact case).

    Scanning all training text for each of thousands of eval texts is slow (tens of MB each), so
    an inverted index narrows the search: a word of ``text`` that touches neither of its ends is
    a whole word in any text containing it, so only the training texts holding the rarest such
    word are scanned. Texts with no such word (one CJK run, a single word) scan the joined
    texts; NUL joins them, which no shard text holds, so a match never spans two texts.
    """

    def __init__(self, texts: Iterable[str]):
        self.texts = sorted(set(texts))
        self.blob = "\x00".join(self.texts)
        self.index: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.texts):
            for w in set(_WORD.findall(t)):
                self.index[w].append(i)

    def __call__(self, text: str) -> bool:
        inner = [m.group() for m in _WORD.finditer(text) if m.start() > 0 and m.end() < len(text)]
        if not inner:
            return text not in self.blob
        postings = min((self.index.get(w, ()) for w in inner), key=len)
        return not any(text in self.texts[i] for i in postings)


class _Builder:
    def __init__(self, seed: int, scale: float, eval_fraction: float, langs: list[str]):
        self.seed, self.scale, self.langs = seed, scale, langs
        self.new_langs = [lang for lang in OOD_LANGS if lang not in langs]
        py = distinct_items(list(python_items()) + doc_items(DOC_PACKAGES))
        self.py_train = [it for it in py if not in_eval("py:" + it.key, seed, eval_fraction)]
        self.py_eval = [it for it in py if in_eval("py:" + it.key, seed, eval_fraction)]
        trained_docs = {it.doc for it in py}
        self.py_ood = [it for it in distinct_items(doc_items(OOD_DOC_PACKAGES)) if it.doc not in trained_docs]
        cl = cldr_items(langs)
        self.cl_train = [it for it in cl if not in_eval("cldr:" + it.key, seed, eval_fraction)]
        self.cl_eval = [it for it in cl if in_eval("cldr:" + it.key, seed, eval_fraction)]
        msgs = messages(CATALOG_PACKAGES, None, OOD_CATALOGS, langs)
        self.msg_train = [m for m in msgs if not in_eval("msg:" + m.key, seed, eval_fraction)]
        self.msg_eval = [m for m in msgs if in_eval("msg:" + m.key, seed, eval_fraction)]
        trained_en = {m.en for m in msgs}
        self.msg_ood = [m for m in messages(CATALOG_PACKAGES, OOD_CATALOGS, [], langs + self.new_langs)
                        if m.en not in trained_en]
        self.topics = pydoc_topics()
        counts = Counter(it.top for it in py)
        self.labels = [m for m, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:CLASSIFICATION_MODULES]

    def n(self, name: str) -> int:
        return max(1, round(SIZES[name] * self.scale))

    # ------------------------------------------------------------------ pretraining text
    def _name_lists(self, items: Sequence[Parallel], source: str) -> list[dict]:
        """Lists of ``NAMES_PER_LIST`` names of one category in one language."""
        lists = []
        for lang in self.langs:
            for cat in sorted({it.category for it in items}):
                names = [it.names[lang] for it in items if it.category == cat and lang in it.names]
                lists += [{"text": "\n".join(names[i:i + NAMES_PER_LIST]), "__source": source, "__lang": lang}
                          for i in range(0, len(names), NAMES_PER_LIST)]
        return lists

    def pretrain(self) -> list[dict]:
        r = _rng(self.seed, "pretrain")
        texts = [{"text": f"{it.signature}\n\n{cut(it.doc, 3000)}", "__source": f"docstrings:{it.source}",
                  "__lang": "en"} for it in _take(r, self.py_train, self.n("pretrain_python"))]
        chunks = [c for _, text in self.topics for c in paragraphs_chunks(text)]
        texts += [{"text": c, "__source": "pydoc_topics", "__lang": "en"}
                  for c in _take(r, chunks, self.n("pretrain_topics"))]
        texts += [{"text": it.doc, "__source": "cldr_records", "__lang": "en"}
                  for it in _take(r, self.cl_train, self.n("pretrain_records"))]
        texts += _take(r, self._name_lists(self.cl_train, "cldr_names"), self.n("pretrain_names"))
        texts += _take(r, self._name_lists(self.msg_train, "catalogs"), self.n("pretrain_messages"))
        r.shuffle(texts)
        return texts

    # ------------------------------------------------------------------ SFT pairs
    def sft(self) -> list[dict]:
        r = _rng(self.seed, "sft")
        out = []

        def pair(instruction: str, inp: str, output: str, ident: str, source: str, lang: str = "en") -> dict:
            return {"query": f"{instruction}\n{inp}", "pos": output, "neg": [], "task": "sft", "lang": "en",
                    "instruction": instruction, "id": ident, "__source": source, "__lang": lang}

        for it in _take(r, self.py_train, self.n("sft_python")):
            out.append(pair("Explain what this Python API does.", it.signature, cut(it.doc, 1500),
                            f"sft:py:{it.key}", f"docstrings:{it.source}"))
        for name, text in _take(r, self.topics, self.n("sft_topics")):
            out.append(pair("Explain this topic of the Python language reference.", name,
                            paragraphs_chunks(text)[0], f"sft:topic:{name}", "pydoc_topics"))
        for items, size, source in ((self.cl_train, "sft_translate", "cldr_names"),
                                    (self.msg_train, "sft_messages", "catalogs")):
            options = [(it, lang) for it in items for lang in self.langs if lang != "en" and lang in it.names]
            for it, lang in _take(r, options, self.n(size)):
                out.append(pair(f"Translate from English to {language_name(lang)}.", it.en, it.names[lang],
                                f"sft:translate:{lang}:{it.key}", source, lang))
        for it in _take(r, self.cl_train, self.n("sft_records")):
            out.append(pair(CATEGORY_PROMPTS[it.category], it.en, it.doc, f"sft:record:{it.key}", "cldr_records"))
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
                 "neg": self._py_negatives(it, pool_by, self.py_train, r), "id": f"retrieval:{it.key}",
                 "__source": f"docstrings:{it.source}"}
                for it in chosen]

    def parallel_rows(self) -> list[dict]:
        return [{"lang": lang, "text": it.names[lang], "en": it.en}
                for it in self.cl_train for lang in self.langs if lang != "en" and lang in it.names]

    def clr(self) -> tuple[list[dict], dict]:
        """CLDR pairs translated by the ``lookup`` translator (CLDR parallel rows) and interface-string
        pairs translated by the ``gettext`` translator (the trained catalogs); returns (pairs,
        summary of each part)."""
        from conan_core.translators.gettext import GettextTranslator
        from conan_core.translators.lookup import LookupTranslator

        r = _rng(self.seed, "clr")
        base = []
        for it in _take(r, self.cl_train, self.n("clr")):
            near = related(it, self.cl_train)[:3 * NUM_NEGATIVES]
            negs = [x.doc for x in r.sample(near, min(NUM_NEGATIVES, len(near)))]
            base.append({"query": it.en, "pos": it.doc, "neg": negs, "task": "retrieval", "lang": "en",
                         "id": f"clr:{it.key}", "__source": "cldr"})
        lookup = LookupTranslator(LookupTranslator.Config(path="<demo parallel rows>"), rows=self.parallel_rows())
        shares = {lang: PAPER_LANG_SHARES.get(lang, 1.0) for lang in self.langs}
        cldr, cldr_summary = assign_clr(base, lookup, shares, seed=self.seed)

        # The English string is the document, so an English query would be the document itself:
        # interface strings are always asked in another language.
        base = []
        for m in _take(r, self.msg_train, self.n("clr_messages")):
            near = related(m, self.msg_train)
            if len(near) < NUM_NEGATIVES:
                near += sorted((x for x in self.msg_train if x.category != m.category),
                               key=lambda x: (-len(x.tags & m.tags), x.key))
            negs = [x.doc for x in near if x.doc != m.doc][:NUM_NEGATIVES]
            base.append({"query": m.en, "pos": m.doc, "neg": negs, "task": "retrieval", "lang": "en",
                         "id": f"clr:{m.key}", "__source": "catalogs"})
        gettext = GettextTranslator(GettextTranslator.Config(
            packages=list(CATALOG_PACKAGES), exclude=list(OOD_CATALOGS), languages=[x for x in self.langs if x != "en"]))
        msg, msg_summary = assign_clr(base, gettext, {k: v for k, v in shares.items() if k != "en"}, seed=self.seed)
        return cldr + msg, {"cldr": cldr_summary, "catalogs": msg_summary}

    def classification(self, py_items: Sequence[PyItem], name_items: Sequence[CldrItem],
                       msg_items: Sequence[Message], sizes: tuple[int, int, int], r: random.Random,
                       with_negatives: bool = True) -> list[dict]:
        """Texts with a label: a docstring -> its module or package (``sizes[0]``), a list of CLDR
        names -> their language (``sizes[1]``), an interface string -> its language (``sizes[2]``)."""
        n_mod, n_lang, n_msg = sizes
        out = []
        labelled = [it for it in py_items if it.top in self.labels]
        for it in _take(r, labelled, n_mod):
            out.append({"text": cut(it.doc, 800), "label": it.top, "lang": "en", "id": f"cls:py:{it.key}",
                        "others": [lab for lab in self.labels if lab != it.top], "__source": f"docstrings:{it.source}"})
        lang_labels = {lang: language_name(lang) for lang in self.langs}
        texts = []
        for lang in self.langs:
            names = [it.names[lang] for it in name_items if lang in it.names]
            _rng(self.seed, f"cls:{lang}").shuffle(names)
            for i in range(0, len(names) - NAMES_PER_CLS_TEXT + 1, NAMES_PER_CLS_TEXT):
                texts.append((lang, f"cls:lang:{lang}:{i}", ", ".join(names[i:i + NAMES_PER_CLS_TEXT]), "cldr_names"))
        chosen = _take(r, texts, n_lang)
        options = [(lang, f"cls:msg:{lang}:{m.key}", m.names[lang], "catalogs") for m in msg_items
                   for lang in self.langs if len(m.names.get(lang, "")) >= MIN_CLS_CHARS]
        chosen += _take(r, options, n_msg) if n_msg else []
        for lang, ident, text, source in chosen:
            out.append({"text": text, "label": lang_labels[lang], "lang": lang, "id": ident, "__source": source,
                        "others": [v for k, v in lang_labels.items() if k != lang]})
        if not with_negatives:
            return [{"text": o["text"], "label": o["label"], "__source": o["__source"]} for o in out]
        return [{"query": o["text"], "pos": o["label"], "neg": r.sample(o["others"], NUM_NEGATIVES),
                 "task": "classification", "lang": o["lang"], "label": o["label"], "id": o["id"],
                 "__source": o["__source"]} for o in out]

    # ------------------------------------------------------------------ STS
    def sts(self, py_items: Sequence[PyItem], par_items: Sequence[Parallel], per_level: int,
            r: random.Random) -> list[dict]:
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
        fill(((it.names[a], it.names[b]) for it in (r.choice(par_items) for _ in range(tries))
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
        for it in par_items:
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
                    c = r.choice(par_items)
                    yield r.choice(summaries).summary, c.names[r.choice(sorted(c.names))]
        fill(unrelated(), 0.0, per_level)
        r.shuffle(out)
        return out

    # ------------------------------------------------------------------ eval
    def _retrieval_set(self, items: Sequence[PyItem], ok, r: random.Random) -> tuple:
        """Summary -> document queries over ``items``; the corpus is the queries' documents plus
        other documents of ``items`` up to ``eval_corpus``. ``ok(text)`` rejects texts seen in training."""
        queries, qrels, corpus = [], [], []
        seen_q: set[str] = set()
        docs_seen: set[str] = set()
        for it in _take(r, [it for it in items if _retrievable(it)], 10**9):
            if len(queries) >= self.n("eval_retrieval"):
                break
            doc = _doc_text(it)
            if it.summary in seen_q or doc in docs_seen or not ok(it.summary) or not ok(doc):
                continue
            seen_q.add(it.summary)
            docs_seen.add(doc)
            queries.append({"id": f"q:{it.key}", "text": it.summary, "lang": "en"})
            qrels.append({"qid": f"q:{it.key}", "doc_id": f"d:{it.key}", "score": 1})
            corpus.append({"id": f"d:{it.key}", "text": doc})
        for it in _take(r, items, 10**9):
            if len(corpus) >= max(self.n("eval_corpus"), len(queries)):
                break
            doc = _doc_text(it)
            if doc not in docs_seen and ok(doc):
                docs_seen.add(doc)
                corpus.append({"id": f"d:{it.key}", "text": doc})
        return (sorted(queries, key=lambda q: q["id"]), sorted(corpus, key=lambda d: d["id"]),
                sorted(qrels, key=lambda q: q["qid"]))

    def _cross_lingual_set(self, items: Sequence[Parallel], ok, r: random.Random, n: int,
                           new_langs: Sequence[str] = ()) -> tuple:
        """Queries in another language -> the item's English document: ``n`` drawn from every
        (item, trained language) pair, plus up to ``eval_new_lang`` per language of ``new_langs``.
        A query equal to its English text, repeated, or seen in training is left out; so is an item
        whose document was seen in training."""
        items = [it for it in items if ok(it.doc)]
        options = [(it, lang) for it in items for lang in sorted(it.names) if lang in self.langs and lang != "en"
                   and it.names[lang].casefold() != it.en.casefold()]
        chosen = _take(r, options, n)
        for lang in new_langs:
            have = [(it, lang) for it in items if lang in it.names and it.names[lang].casefold() != it.en.casefold()]
            chosen += _take(r, have, self.n("eval_new_lang"))
        xq, xrels, seen = [], [], set()
        for it, lang in chosen:
            text = it.names[lang]
            if (lang, text) in seen or not ok(text):
                continue
            seen.add((lang, text))
            qid = f"q:{lang}:{it.key}"
            xq.append({"id": qid, "text": text, "lang": lang})
            xrels.append({"qid": qid, "doc_id": f"d:{it.key}", "score": 1})
        corpus = [{"id": f"d:{it.key}", "text": it.doc} for it in sorted(items, key=lambda it: it.key)]
        return sorted(xq, key=lambda q: q["id"]), corpus, sorted(xrels, key=lambda q: q["qid"])

    def eval_sets(self, train_texts: set[str]) -> dict:
        """In-domain sets (held-out items of trained sources) and out-of-domain sets (held-out
        sources), each ``{"retrieval": (queries, corpus, qrels), "cross_lingual": ..., "sts": [...],
        "classification": [...]}``. In-domain texts equal to a training text are left out;
        out-of-domain texts occurring anywhere in ``train_texts`` (as a substring) are left out."""
        def in_ok(text: str) -> bool:
            return text not in train_texts

        unseen = Unseen(train_texts)
        r = _rng(self.seed, "eval")
        ind = {
            "retrieval": self._retrieval_set(self.py_eval, in_ok, r),
            "cross_lingual": self._cross_lingual_set(self.cl_eval + self.msg_eval, in_ok, r,
                                                     self.n("eval_cross_lingual")),
            "sts": [s for s in self.sts(self.py_eval, self.cl_eval + self.msg_eval, self.n("eval_sts_level"),
                                        _rng(self.seed, "eval_sts")) if in_ok(s["s1"]) and in_ok(s["s2"])],
            "classification": [c for c in self.classification(
                self.py_eval, self.cl_eval, self.msg_eval, (self.n("eval_cls"), self.n("eval_cls"), self.n("eval_cls") // 2),
                _rng(self.seed, "eval_cls"), with_negatives=False) if in_ok(c["text"])],
        }
        r = _rng(self.seed, "ood")
        ood = {
            "retrieval": self._retrieval_set(self.py_ood, unseen, r),
            "cross_lingual": self._cross_lingual_set(self.msg_ood, unseen, r, self.n("eval_cross_lingual"),
                                                     self.new_langs),
            "sts": [s for s in self.sts(self.py_ood, self.msg_ood, self.n("eval_sts_level"), _rng(self.seed, "ood_sts"))
                    if unseen(s["s1"]) and unseen(s["s2"])],
            "classification": [c for c in self.classification(
                [], [], self.msg_ood, (0, 0, 2 * self.n("eval_cls")), _rng(self.seed, "ood_cls"),
                with_negatives=False) if unseen(c["text"])],
        }
        return {"in_domain": ind, "out_of_domain": ood}


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: v for k, v in row.items() if not k.startswith("__")}, ensure_ascii=False) + "\n")
            n += 1
    return n


def _by(samples: list[dict], field: str) -> dict:
    return dict(sorted(Counter(s.get(field, "-") for s in samples).items()))


def _pair_counts(samples: list[dict]) -> dict:
    by_lang = defaultdict(Counter)
    for s in samples:
        by_lang[s["task"]][s["lang"]] += 1
    return {"count": len(samples), "tasks": _by(samples, "task"), "sources": _by(samples, "__source"),
            "langs": {t: dict(sorted(c.items())) for t, c in sorted(by_lang.items())}}


def _write_eval(root: Path, sets: dict) -> dict:
    """Write one domain's eval sets under ``root``; returns their counts."""
    counts = {}
    for name in ("retrieval", "cross_lingual"):
        q, c, rels = sets[name]
        _write_jsonl(root / name / "queries.jsonl", q)
        _write_jsonl(root / name / "corpus.jsonl", c)
        _write_jsonl(root / name / "qrels.jsonl", rels)
        counts[name] = {"queries": len(q), "corpus": len(c), "qrels": len(rels),
                        "langs": dict(sorted(Counter(x["lang"] for x in q).items()))}
    _write_jsonl(root / "sts.jsonl", sets["sts"])
    _write_jsonl(root / "classification.jsonl", sets["classification"])
    counts["sts"] = {"pairs": len(sets["sts"]),
                     "scores": dict(sorted(Counter(str(s["score"]) for s in sets["sts"]).items()))}
    counts["classification"] = {"texts": len(sets["classification"]),
                                "labels": len({c["label"] for c in sets["classification"]}),
                                "sources": _by(sets["classification"], "__source")}
    return counts


def build_demo(out_dir: str | Path, *, seed: int = 0, scale: float = 1.0, eval_fraction: float = 0.15,
               shard_size: int = 1000, langs: list[str] | None = None, verbose: bool = False) -> dict:
    """Build the demo corpus under ``out_dir`` (replacing the splits it writes); returns the summary.

    Deterministic: the same ``seed``, ``scale``, Python version and versions of the source
    packages (listed in the summary) give byte-identical shards, whatever ``PYTHONHASHSEED``.
    ``langs``: languages of the multilingual parts (default: the 26 of RECIPE §6). The summary
    (also ``demo_summary.json``) has counts per split, source, task and language and names the
    held-out sources; the returned dict additionally holds ``seconds``. A declared source package
    that is not installed raises :class:`~conan_core.data.demo_python.DemoSourceError`.
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
    supervised = b.retrieval() + clr + b.classification(
        b.py_train, b.cl_train, b.msg_train, (b.n("cls_module"), b.n("cls_lang"), b.n("cls_messages")), _rng(seed, "cls"))
    _rng(seed, "supervised").shuffle(supervised)
    sts = b.sts(b.py_train, b.cl_train + b.msg_train, b.n("sts_level"), _rng(seed, "sts"))
    splits = {"pretrain": pretrain, "sft": sft, "supervised": supervised, "sts": sts}
    parallel = b.parallel_rows()
    ev = b.eval_sets(_training_texts(splits) | {t for row in parallel for t in (row["text"], row["en"])})

    write_shards(pretrain, out / "pretrain", kind="text", shard_size=shard_size, prefix="pretrain")
    write_shards(sft, out / "sft", kind="pairs", shard_size=shard_size, prefix="sft")
    write_shards(supervised, out / "supervised", kind="pairs", shard_size=shard_size, prefix="supervised")
    write_shards(sts, out / "sts", kind="sts", shard_size=shard_size, prefix="sts")
    _write_jsonl(out / "parallel.jsonl", parallel)
    eval_counts = {"in_domain": _write_eval(out / "eval", ev["in_domain"]),
                   "out_of_domain": _write_eval(out / "eval" / OOD_DIR, ev["out_of_domain"])}

    import babel

    def split_counts(items: Sequence, of=lambda it: it.source) -> dict:
        return dict(sorted(Counter(of(it) for it in items).items()))

    summary = {
        "seed": seed, "scale": scale, "eval_fraction": eval_fraction,
        "sources": {"python": sys.version.split()[0], "babel_cldr": babel.__version__, "packages": versions(),
                    "docstrings": {"train": split_counts(b.py_train), "eval": split_counts(b.py_eval)},
                    "cldr_items": {"train": len(b.cl_train), "eval": len(b.cl_eval)},
                    "catalog_messages": {"train": split_counts(b.msg_train, lambda m: m.category),
                                         "eval": split_counts(b.msg_eval, lambda m: m.category)},
                    "pydoc_topics": len(b.topics)},
        "held_out": {"docstring_packages": [p.name for p in OOD_DOC_PACKAGES], "catalogs": list(OOD_CATALOGS),
                     "languages": b.new_langs,
                     "docstrings": split_counts(b.py_ood),
                     "catalog_messages": split_counts(b.msg_ood, lambda m: m.category)},
        "pretrain": {"count": len(pretrain), "sources": _by(pretrain, "__source"), "langs": _by(pretrain, "__lang")},
        "sft": dict(_pair_counts(sft), langs=_by(sft, "__lang")),
        "supervised": _pair_counts(supervised),
        "sts": {"count": len(sts), "scores": dict(sorted(Counter(str(s["score"]) for s in sts).items()))},
        "clr": {part: {k: s[k] for k in ("queries", "counts", "swapped", "redrawn", "kept_source")}
                for part, s in clr_summary.items()},
        "parallel_rows": len(parallel),
        "eval": eval_counts,
        "classification_labels": b.labels,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    result = dict(summary, seconds=round(time.perf_counter() - t0, 2))
    if verbose:
        print(format_summary(result))
    return result


def _eval_line(name: str, ev: dict) -> str:
    return (f"  {name:<13} retrieval {ev['retrieval']['queries']} queries / {ev['retrieval']['corpus']} docs; "
            f"cross-lingual {ev['cross_lingual']['queries']} queries in {len(ev['cross_lingual']['langs'])} langs / "
            f"{ev['cross_lingual']['corpus']} docs; sts {ev['sts']['pairs']} pairs; "
            f"classification {ev['classification']['texts']} texts, {ev['classification']['labels']} labels")


def format_summary(summary: dict) -> str:
    """A short human-readable table of a demo summary."""
    src, held = summary["sources"], summary["held_out"]
    n_doc = sum(summary["sources"]["docstrings"]["train"].values()) + sum(src["docstrings"]["eval"].values())
    n_msg = sum(src["catalog_messages"]["train"].values()) + sum(src["catalog_messages"]["eval"].values())
    lines = [
        f"demo corpus (seed {summary['seed']}, scale {summary['scale']}) built in {summary.get('seconds', '?')} s",
        f"  sources:    Python {src['python']} stdlib + {len(src['packages'])} packages: {n_doc} docstrings, "
        f"{src['pydoc_topics']} pydoc topics; {n_msg} Django interface strings with translations; "
        f"CLDR via babel {src['babel_cldr']} ({sum(src['cldr_items'].values())} entities)",
        f"  held out:   docstrings of {', '.join(held['docstring_packages'])} "
        f"({sum(held['docstrings'].values())}); catalogs {', '.join(c.rsplit('/', 1)[-1] for c in held['catalogs'])} "
        f"({sum(held['catalog_messages'].values())} strings); languages {', '.join(held['languages']) or '-'}",
        f"  pretrain:   {summary['pretrain']['count']} texts " +
        ", ".join(f"{k} {v}" for k, v in _grouped(summary["pretrain"]["sources"]).items()),
        f"  sft:        {summary['sft']['count']} pairs",
        f"  supervised: {summary['supervised']['count']} pairs " +
        ", ".join(f"{t} {n}" for t, n in summary["supervised"]["tasks"].items()),
    ]
    for part, clr in summary["clr"].items():
        lines.append(f"  clr {part + ':':<10}" + " ".join(f"{k}:{v}" for k, v in clr["counts"].items() if v) +
                     f" (swapped {clr['swapped']}, redrawn {clr['redrawn']}, kept source {clr['kept_source']})")
    lines.append(f"  sts:        {summary['sts']['count']} pairs, scores {summary['sts']['scores']}")
    lines.append(_eval_line("eval in:", summary["eval"]["in_domain"]))
    lines.append(_eval_line("eval out:", summary["eval"]["out_of_domain"]))
    return "\n".join(lines)


def _grouped(sources: dict) -> dict:
    """Source counts with every ``docstrings:<package>`` summed under ``docstrings``."""
    out: dict[str, int] = {}
    for k, v in sources.items():
        key = k.split(":", 1)[0]
        out[key] = out.get(key, 0) + v
    return out
