"""Tokenizer training: lossless round trip, parity with sentencepiece, inputs, CLI."""

from __future__ import annotations

import json
import random

import pytest

from conan_core.tokenizer import clean_text, iter_texts, load_sentencepiece, load_tokenizer, train_tokenizer
from conan_core.tokenizer.load import TokenizerLoadError
from conan_core.tokenizer.text import TokenizerDataError, reservoir_sample, split_long
from conan_core.tokenizer.train import NUM_RESERVED, TokenizerTrainError, select_characters

NASTY = [
    "", " ", "  two leading spaces", "trailing spaces  ", "\n", "\n\nleading newlines", "ends with newline\n",
    "tabs\tand\t\ttabs", "windows\r\nline\r\n", "   \t \n mixed whitespace \t\n",
    "emoji 😀🎉 ok", "ZWJ family 👨\u200d👩\u200d👧\u200d👦 and flag 🇩🇪🇯🇵 and tone 👍🏽",
    "combining e\u0301 vs é and zalgo Z\u0324\u0354\u0367a\u0308\u0356", "NFKC bait: ﬁ ① ｶ Ⅻ ㎏ ＡＢＣ",
    "Arabic RTL: مرحبا بالعالم", "Hebrew: שלום עולם", "bidi \u200f\u202eoverride\u202c\u200e",
    "CJK: 日本語のテキスト 中文 한국어", "Thai: ภาษาไทยง่ายนิดเดียว", "Khmer: ភាសាខ្មែរ", "Devanagari: हिन्दी",
    "decomposed Hangul \u1100\u1161\u11a8", "control \x00\x01\x07\x1b[31mred\x1b[0m\x7f", "\u2028line sep\u2029",
    "\ufeffBOM at start", "nbsp\u00a0and ideographic\u3000space", "literal <s> </s> <pad> <unk> in text",
    "<query> marker <passage>p<instruct>", "<0x41> looks like a byte token", "nonchar \ufffe\uffff",
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010FFFD", "def f(x):\n    return x  # code\n", "a" * 500 + " " + "ü" * 300,
]


def _corpus():
    """Small real multilingual text: language-reference topics and CLDR names (seconds to train)."""
    from pydoc_data.topics import topics

    from conan_core.data.demo_cldr import cldr_items

    texts = [t for _, t in sorted(topics.items())][:40]
    for it in cldr_items(["en", "de", "ja", "ar", "ru", "zh", "th"])[:300]:
        texts.append(" ".join(it.names.values()))
    return texts


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    data = root / "train.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in _corpus()) + "\n",
                    encoding="utf-8")
    out = train_tokenizer([data], 900, root / "tokenizer", progress=False)
    return out, load_tokenizer(out), load_sentencepiece(out), data


def test_saved_files_and_fast(trained):
    out, tok, sp, _ = trained
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.model",
                 "conan_tokenizer.json"):
        assert (out / name).is_file(), name
    assert tok.is_fast
    assert len(tok) == sp.get_piece_size() == 900
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["clean_up_tokenization_spaces"] is False


def test_reserved_ids(trained):
    _, tok, sp, _ = trained
    names = ["<pad>", "<s>", "</s>", "<unk>", "<instruct>", "<query>", "<passage>"]
    assert tok.convert_tokens_to_ids(names) == list(range(7))
    assert [sp.id_to_piece(i) for i in range(7)] == names
    assert tok.convert_tokens_to_ids(["<0x00>", "<0xFF>"]) == [7, NUM_RESERVED - 1]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)


@pytest.mark.parametrize("text", NASTY)
def test_round_trip_exact(trained, text):
    _, tok, _, _ = trained
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert 3 not in ids  # byte fallback: <unk> never appears for valid text
    with_special = tok(text)["input_ids"]
    assert with_special == [1, *ids, 2]
    assert tok.decode(with_special, skip_special_tokens=True) == text


@pytest.mark.parametrize("text", [t for t in NASTY if "\u2581" not in t])
def test_parity_with_sentencepiece(trained, text):
    _, tok, sp, _ = trained
    assert tok.encode(text, add_special_tokens=False) == sp.encode(text)


def test_parity_on_training_text_and_fresh_random_strings(trained):
    _, tok, sp, data = trained
    texts = list(iter_texts([data]))
    rng = random.Random()  # fresh inputs every run (the reference is sentencepiece itself)
    pieces = [sp.id_to_piece(i).replace("\u2581", " ") for i in range(NUM_RESERVED, sp.get_piece_size())]
    alphabet = [chr(c) for c in (*range(0x20, 0x7f), *range(0xa0, 0x250), *range(0x3040, 0x30ff),
                                 *range(0x0600, 0x06ff), 0x1f600, 0x200d, 0x0301, 0x0a, 0x09)]
    for _ in range(300):
        parts = [rng.choice(pieces) if rng.random() < 0.6 else rng.choice(alphabet) for _ in range(rng.randint(1, 40))]
        texts.append("".join(parts))
    mismatches = [t for t in texts if tok.encode(t, add_special_tokens=False) != sp.encode(t)]
    assert mismatches == []
    assert all(tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in texts)


def test_literal_meta_symbol_round_trips_in_fast_tokenizer(trained):
    _, tok, sp, _ = trained
    text = "x\u2581y"
    assert sp.decode(sp.encode(text)) == "x y"  # sentencepiece conflates ▁ with a space
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[1:4] == ["<0xE2>", "<0x96>", "<0x81>"]
    assert tok.decode(ids) == text


def test_control_strings_are_text_markers_are_tokens(trained):
    _, tok, _, _ = trained
    assert not {0, 1, 2, 3} & set(tok.encode("<s> </s> <pad> <unk>", add_special_tokens=False))
    ids = tok.encode("<query>hello<passage>", add_special_tokens=False)
    assert ids[0] == 5 and 6 in ids


def test_lone_surrogate_policy(trained):
    _, tok, _, _ = trained
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("\udc00x\ud83d") == "\ufffdx\ufffd"
    assert clean_text("\ud83d\ude00") == "😀"  # a well-formed pair is joined, not replaced
    plain = "no surrogates here"
    assert clean_text(plain) is plain
    cleaned = clean_text("bad \ud800 text")
    assert tok.decode(tok.encode(cleaned, add_special_tokens=False)) == "bad \ufffd text"
    with pytest.raises(Exception):
        tok.encode("bad \ud800 text")  # raw lone surrogates are rejected, not silently changed


def test_padding_batch(trained):
    _, tok, _, _ = trained
    batch = tok(["a", "a longer text"], padding=True)
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1])
    assert batch["input_ids"][0][-1] == 0 and batch["attention_mask"][0][-1] == 0


def test_inputs_txt_jsonl_and_shards(tmp_path):
    from conan_core.data.shards import write_shards

    txt = tmp_path / "a.txt"
    txt.write_text("first line\n\nsecond line\n", encoding="utf-8")
    jl = tmp_path / "b.jsonl"
    jl.write_text(json.dumps({"query": "q", "pos": "p", "neg": ["n"]}) + "\n" + json.dumps("bare") + "\n")
    write_shards([{"text": "shard text"}], tmp_path / "shards", kind="text")
    assert list(iter_texts([txt, jl, tmp_path / "shards"])) == ["first line", "second line", "q", "p",
                                                                 "bare", "shard text"]
    with pytest.raises(TokenizerDataError, match="no such file"):
        list(iter_texts([tmp_path / "missing.txt"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(TokenizerDataError, match="bad.jsonl:1"):
        list(iter_texts([bad]))


def test_split_long_and_reservoir():
    text = "".join(f"line {i} " * (i % 7) + "\n" for i in range(200))
    parts = split_long(text, 100)
    assert "".join(parts) == text and all(len(p) <= 100 for p in parts)
    assert split_long("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]
    items = [str(i) for i in range(1000)]
    a = reservoir_sample(items, 50, seed=1, progress=False)
    assert a == reservoir_sample(items, 50, seed=1, progress=False)
    assert a != reservoir_sample(items, 50, seed=2, progress=False)
    assert len(set(a)) == 50 and a == sorted(a, key=int)  # stream order kept
    assert reservoir_sample(items[:10], 50, seed=0, progress=False) == items[:10]


def test_coverage_lowered_when_characters_exceed_half_the_vocab(tmp_path):
    chars = [chr(c) for c in range(0x4e00, 0x4e00 + 600)]
    rng = random.Random(0)
    lines = ["".join(rng.choice(chars) for _ in range(30)) for _ in range(300)]
    kept, cov = select_characters(lines, 0.9995, 100)
    assert len(kept - {" "}) == 100 and cov < 0.9995
    kept_all, cov_all = select_characters(lines, 1.0, 10_000)
    assert cov_all == 1.0 and kept_all - {" "} == set("".join(lines))
    data = tmp_path / "cjk.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = train_tokenizer([data], NUM_RESERVED + 200, tmp_path / "tok", progress=False)
    meta = json.loads((out / "conan_tokenizer.json").read_text())
    assert meta["effective_character_coverage"] < 0.9995
    tok = load_tokenizer(out)
    assert all(tok.decode(tok.encode(s, add_special_tokens=False)) == s for s in lines[:20])


def test_errors(tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("some text\n")
    with pytest.raises(TokenizerTrainError, match="too small"):
        train_tokenizer([data], 100, tmp_path / "o", progress=False)
    with pytest.raises(TokenizerTrainError, match="character_coverage"):
        train_tokenizer([data], 1000, tmp_path / "o", character_coverage=1.5, progress=False)
    with pytest.raises(TokenizerTrainError, match="lower --vocab-size"):
        train_tokenizer([data], 2000, tmp_path / "o", progress=False)  # far more ids than the text has
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(TokenizerTrainError, match="no training text"):
        train_tokenizer([empty], 1000, tmp_path / "o", progress=False)
    with pytest.raises(TokenizerLoadError, match="conan tokenizer train"):
        load_tokenizer(tmp_path / "nowhere")


def test_cli_train_and_encode(tmp_path, capsys, trained):
    from conan_core.commands.tokenizer import add_commands
    import argparse

    _, _, _, data = trained
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tokenizer", "train", "--input", str(data), "--vocab-size", "700",
                              "--out", str(tmp_path / "cli"), "--max-sentences", "200"])
    assert args.func(args) == 0
    assert "tokenizer saved" in capsys.readouterr().out
    meta = json.loads((tmp_path / "cli" / "conan_tokenizer.json").read_text())
    assert meta["sentences"] == 200 and meta["vocab_size"] == 700
    args = parser.parse_args(["tokenizer", "encode", str(tmp_path / "cli"), " hi\n"])
    assert args.func(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "".join(shown["tokens"]) == " hi\n"
