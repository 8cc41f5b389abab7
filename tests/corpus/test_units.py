"""CTC token units: specs parsed, phones / chars / bpe built from transcripts (real
sentencepiece, real lexicon files), encoded and decoded back to words, written and read
back with their fingerprint checked, and the one-line errors of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdpipe.corpus.lexicon import Lexicon, read_lexicon, write_lexicon
from kdpipe.corpus.units import (
    BLANK,
    BPE_FILE,
    LEXICON_FILE,
    UNITS_FILE,
    WORD_BOUNDARY,
    TokenUnits,
    UnitsSpec,
    build_units,
)
from kdpipe.errors import ConfigError, CorpusError, KdpipeError, LabelSetError

TRANSCRIPTS = {
    "u3": "hello there  world",
    "u1": "hello world",
    "u2": "the cat sat on the mat",
    "u4": "Hello cats",
}
PHONES = ("sil", "spn", "h", "@", "l", "oU", "w", "3:", "d", "D", "k", "a", "t")
PRONS = {
    "hello": (("h", "@", "l", "oU"), ("h", "E", "l", "oU")),
    "world": (("w", "3:", "l", "d"),),
    "the": (("D", "@"),),
    "cat": (("k", "a", "t"),),
    "<unk>": (("spn",),),
    "!SIL": (("sil",),),
}


def lexicon_file(tmp_path: Path) -> Lexicon:
    """A lexicon written with ``write_lexicon`` and read back from the file."""
    phones = (*PHONES, "E")
    path = write_lexicon(Lexicon(PRONS, phones), tmp_path / "lex" / "lexicon.txt")
    return read_lexicon(path, phones=phones)


def one_line(excinfo: pytest.ExceptionInfo[KdpipeError], *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    for part in parts:
        assert part in message, message
    return message


@pytest.fixture(scope="module")
def bpe() -> TokenUnits:
    return build_units(UnitsSpec.parse("bpe:30"), TRANSCRIPTS)


@pytest.mark.parametrize(
    ("text", "kind", "size"),
    [("phones", "phones", None), ("chars", "chars", None), ("bpe:500", "bpe", 500),
     (" bpe:2 ", "bpe", 2)],
)  # fmt: skip
def test_spec_parses_and_prints_back(text, kind, size):
    spec = UnitsSpec.parse(text)
    assert (spec.kind, spec.size) == (kind, size)
    assert str(spec) == text.strip()
    assert UnitsSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "says"),
    [("bpe", "needs a vocabulary size"), ("bpe:x", "whole number"), ("bpe:0", ">= 2"),
     ("bpe:-3", "whole number"), ("bpe:", "whole number"), ("words", "unknown kind 'words'"),
     ("chars:40", "only bpe takes a size"), ("", "unknown kind")],
)  # fmt: skip
def test_bad_specs_are_one_line_config_errors(text, says):
    with pytest.raises(ConfigError) as excinfo:
        UnitsSpec.parse(text)
    one_line(excinfo, says)


def test_spec_constructor_validates_too():
    with pytest.raises(ConfigError, match="takes no size"):
        UnitsSpec("phones", 40)
    with pytest.raises(ConfigError, match="integer"):
        UnitsSpec("bpe", True)


def test_chars_tokens_encode_and_words_round_trip():
    units = build_units(UnitsSpec("chars"), TRANSCRIPTS)
    assert units.tokens == (WORD_BOUNDARY, "H", "a", "c", "d", "e", "h", "l", "m", "n", "o",
                            "r", "s", "t", "w")  # fmt: skip
    assert units.labels.names == (BLANK, *units.tokens) and units.blank == 0
    ids = units.encode("hello  world", "u1")
    assert units.token_names(ids) == list("hello|world")  # "|" between words, not at the ends
    assert units.words(ids) == ["hello", "world"]
    assert units.words([0, *ids[:5], 0, 1, 1, *ids[6:], 1]) == ["hello", "world"]  # blanks skipped
    assert units.encode("Hello", "u4")[0] == units.labels.index("H")  # no silent lower-casing
    assert units.spec == UnitsSpec("chars")


def test_bpe_encode_and_words_round_trip(bpe):
    assert len(bpe.labels) == 30 and bpe.labels.names[0] == BLANK
    assert "<unk>" not in bpe.tokens and "<s>" not in bpe.tokens
    for text in TRANSCRIPTS.values():
        ids = bpe.encode(text, "u")
        assert ids and min(ids) >= 1 and max(ids) < len(bpe.labels)
        assert bpe.words(ids) == text.split()
    assert bpe.words([0, *bpe.encode("the mat"), 0]) == ["the", "mat"]
    assert bpe.encode("sat hello") == bpe.encode(" sat\thello ")  # any white space splits words
    assert bpe.spec == UnitsSpec("bpe", 30)


def test_bpe_training_is_deterministic_and_order_free(bpe):
    again = build_units(UnitsSpec("bpe", 30), dict(reversed(list(TRANSCRIPTS.items()))))
    assert again.bpe_model == bpe.bpe_model and again.fingerprint == bpe.fingerprint
    other = build_units(UnitsSpec("bpe", 29), TRANSCRIPTS)
    assert other.fingerprint != bpe.fingerprint


def test_bpe_size_beyond_the_transcripts_says_which_sizes_work():
    with pytest.raises(ConfigError) as excinfo:
        build_units(UnitsSpec("bpe", 5000), TRANSCRIPTS)
    message = one_line(excinfo, "bpe:5000", "at most bpe:")
    largest = int(message.rsplit("bpe:", 1)[1].split()[0])
    assert len(build_units(UnitsSpec("bpe", largest), TRANSCRIPTS).labels) == largest
    with pytest.raises(ConfigError) as excinfo:
        build_units(UnitsSpec("bpe", 3), TRANSCRIPTS)
    one_line(excinfo, "bpe:3", "at least bpe:")


def test_phones_from_a_lexicon_file_first_pronunciation_no_silence(tmp_path):
    lexicon = lexicon_file(tmp_path)
    transcripts = {"a": "hello world", "b": "the cat <unk>"}
    units = build_units(UnitsSpec("phones"), transcripts, lexicon=lexicon)
    assert units.tokens == ("h", "@", "l", "oU", "w", "3:", "d", "D", "k", "a", "t", "E")
    assert units.lexicon == lexicon  # kept whole: later transcripts may use any of its words
    ids = units.encode("hello <unk> world !SIL the", "u9")
    assert units.token_names(ids) == ["h", "@", "l", "oU", "w", "3:", "l", "d", "D", "@"]
    assert units.words(ids) is None
    with pytest.raises(CorpusError) as excinfo:
        units.encode("hello zebra", "utterance u9")
    one_line(excinfo, "utterance u9", "'zebra'", "no pronunciation")
    with pytest.raises(CorpusError) as excinfo:
        units.encode("<unk> !SIL", "u9")
    one_line(excinfo, "u9", "only silence")


def test_phones_take_g2p_for_words_the_lexicon_lacks(tmp_path):
    lexicon = Lexicon({"hello": (("h", "@", "l", "oU"),)}, ("sil", "h", "@", "l", "oU", "z",
                      "i:", "b", "r"))  # fmt: skip
    units = build_units(UnitsSpec("phones"), {"a": "hello zebra"}, lexicon=lexicon, g2p="en-us")
    assert units.lexicon is not None and units.lexicon.g2p_words == ("zebra",)
    expected = ["z", "i:", "b", "r", "@", "h", "@", "l", "oU"]
    assert units.token_names(units.encode("zebra hello")) == expected
    units.write(tmp_path / "units")
    assert TokenUnits.read(tmp_path / "units") == units


def test_phones_without_lexicon_or_with_an_unknown_word_are_errors():
    with pytest.raises(CorpusError, match="no lexicon and no G2P"):
        build_units(UnitsSpec("phones"), TRANSCRIPTS)
    lexicon = Lexicon({"hello": (("h",),)}, ("sil", "h"))
    with pytest.raises(CorpusError) as excinfo:
        build_units(UnitsSpec("phones"), TRANSCRIPTS, lexicon=lexicon)
    one_line(excinfo, "utterance", "has no pronunciation")
    with pytest.raises(ConfigError, match="phones units only"):
        build_units(UnitsSpec("chars"), TRANSCRIPTS, lexicon=lexicon)


@pytest.mark.parametrize("spec", ["chars", "bpe:30"])
def test_token_outside_the_set_names_the_utterance_and_character(spec, bpe):
    units = bpe if spec == "bpe:30" else build_units(UnitsSpec.parse(spec), TRANSCRIPTS)
    with pytest.raises(CorpusError) as excinfo:
        units.encode("hello wörld", "utterance x7")
    one_line(excinfo, "utterance x7", "'ö'", "'wörld'", spec)
    with pytest.raises(CorpusError) as excinfo:
        units.encode("   ", "utterance x8")
    one_line(excinfo, "utterance x8", "empty transcript")
    with pytest.raises(CorpusError, match="x9"):
        units.encode("hello|world", "x9")  # the boundary is a token, never a character


def test_bad_training_transcripts_are_one_line_errors():
    with pytest.raises(CorpusError) as excinfo:
        build_units(UnitsSpec("chars"), {"a": "hello", "b": " "})
    one_line(excinfo, "utterance b", "empty transcript")
    with pytest.raises(CorpusError) as excinfo:
        build_units(UnitsSpec("chars"), {"a": "left|right"})
    one_line(excinfo, "utterance a", "word boundary")
    with pytest.raises(CorpusError, match="no transcripts"):
        build_units(UnitsSpec("bpe", 10), {})


@pytest.mark.parametrize("kind", ["chars", "bpe", "phones"])
def test_write_read_round_trip(tmp_path, kind, bpe):
    if kind == "bpe":
        units = bpe
    elif kind == "chars":
        units = build_units(UnitsSpec("chars"), TRANSCRIPTS)
    else:
        units = build_units(
            UnitsSpec("phones"), {"a": "hello world"}, lexicon=lexicon_file(tmp_path)
        )
    units.write(tmp_path / "units")
    record = json.loads((tmp_path / "units" / UNITS_FILE).read_text(encoding="utf-8"))
    assert record["tokens"] == list(units.tokens) and record["fingerprint"] == units.fingerprint
    assert record["blank"] == BLANK and record["blank_index"] == 0
    assert (tmp_path / "units" / BPE_FILE).is_file() == (kind == "bpe")
    assert (tmp_path / "units" / LEXICON_FILE).is_file() == (kind == "phones")
    back = TokenUnits.read(tmp_path / "units")
    assert back == units and back.fingerprint == units.fingerprint
    back.check_same(units, "the store", "the model")
    text = "hello world"
    assert back.encode(text) == units.encode(text)


def test_fingerprint_follows_tokens_model_and_lexicon(tmp_path, bpe):
    chars = build_units(UnitsSpec("chars"), TRANSCRIPTS)
    fewer = build_units(UnitsSpec("chars"), {"a": "hello world"})
    assert chars.fingerprint != fewer.fingerprint
    assert chars.fingerprint == build_units(UnitsSpec("chars"), TRANSCRIPTS).fingerprint
    other_model = build_units(UnitsSpec("bpe", 30), TRANSCRIPTS | {"u5": "hello hello cat"})
    assert other_model.bpe_model != bpe.bpe_model and other_model.fingerprint != bpe.fingerprint
    lexicon = lexicon_file(tmp_path)
    one = build_units(UnitsSpec("phones"), {"a": "hello"}, lexicon=lexicon)
    changed = Lexicon({**lexicon.prons, "hello": (("h", "E", "l", "oU"),)}, lexicon.phones)
    two = build_units(UnitsSpec("phones"), {"a": "hello"}, lexicon=changed)
    assert one.tokens == two.tokens and one.fingerprint != two.fingerprint
    with pytest.raises(LabelSetError) as excinfo:
        one.check_same(two, "the store", "the model")
    one_line(excinfo, "the store", "the model", "'hello'", "'h @ l oU' vs 'h E l oU'")


def test_check_same_names_the_first_difference(bpe):
    chars = build_units(UnitsSpec("chars"), TRANSCRIPTS)
    with pytest.raises(LabelSetError) as excinfo:
        chars.check_same(bpe, "the teacher", "the student")
    one_line(excinfo, "the teacher", "the student", "chars vs bpe")
    fewer = build_units(UnitsSpec("chars"), {"a": "hello world"})
    with pytest.raises(LabelSetError) as excinfo:
        chars.check_same(fewer, "the teacher", "the student")
    one_line(excinfo, "label set", "labels")
    same_pieces = TokenUnits("bpe", bpe.tokens, _retrained_same_pieces(bpe))
    with pytest.raises(LabelSetError, match="bpe models differ"):
        bpe.check_same(same_pieces, "a", "b")


def _retrained_same_pieces(units: TokenUnits) -> bytes:
    """The same pieces in another model: the proto with one piece's score changed."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    assert units.bpe_model is not None
    proto.ParseFromString(units.bpe_model)
    proto.pieces[5].score -= 0.5
    return proto.SerializeToString()


def test_tampered_or_missing_files_are_one_line_errors(tmp_path, bpe):
    folder = tmp_path / "units"
    bpe.write(folder)
    units_json = folder / UNITS_FILE
    record = json.loads(units_json.read_text(encoding="utf-8"))
    units_json.write_text(json.dumps({**record, "fingerprint": "0" * 16}), encoding="utf-8")
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, str(units_json), "fingerprint")
    tokens = [*record["tokens"][:-1], "zz"]
    units_json.write_text(json.dumps({**record, "tokens": tokens}), encoding="utf-8")
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, str(units_json), "pieces")
    units_json.write_text(json.dumps(record), encoding="utf-8")
    (folder / BPE_FILE).write_bytes(_retrained_same_pieces(bpe))  # a model swapped in
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, "fingerprint")
    (folder / BPE_FILE).write_bytes(b"not a model at all")
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, "not a sentencepiece model")
    (folder / BPE_FILE).unlink()
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, "bpe model not found", BPE_FILE)
    units_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, str(units_json), "not JSON")
    units_json.unlink()
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(folder)
    one_line(excinfo, "units file not found")


def test_tampered_lexicon_is_caught_by_the_fingerprint(tmp_path):
    units = build_units(UnitsSpec("phones"), {"a": "hello"}, lexicon=lexicon_file(tmp_path))
    units.write(tmp_path / "units")
    path = tmp_path / "units" / LEXICON_FILE
    path.write_text(path.read_text(encoding="utf-8").replace("w 3: l d", "w 3: d"), "utf-8")
    with pytest.raises(CorpusError) as excinfo:
        TokenUnits.read(tmp_path / "units")
    one_line(excinfo, "fingerprint")


def test_constructor_refuses_fields_that_disagree(bpe):
    with pytest.raises(CorpusError, match="blank"):
        TokenUnits("chars", (WORD_BOUNDARY, BLANK))
    with pytest.raises(CorpusError, match="one character"):
        TokenUnits("chars", (WORD_BOUNDARY, "ab"))
    with pytest.raises(CorpusError, match="bpe model"):
        TokenUnits("bpe", bpe.tokens)
    with pytest.raises(CorpusError, match="lexicon"):
        TokenUnits("phones", ("a",))
    with pytest.raises(LabelSetError, match="outside"):
        bpe.token_names([len(bpe.labels)])
