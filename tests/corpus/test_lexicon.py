"""Lexicons: Kaldi lexicon.txt / lexiconp.txt and CMUdict read and written, phone sets, and
``lexicon_for`` (lexicon first, eSpeak G2P for the rest, the report, bad input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdpipe.corpus.lexicon import (
    NO_G2P,
    SILENCE,
    Lexicon,
    detect_format,
    lexicon_for,
    read_lexicon,
    read_phones,
    write_lexicon,
)
from kdpipe.corpus.synth.phonemes import PHONES
from kdpipe.errors import CorpusError

KALDI = """\
!SIL sil
hello h @ l oU
hello h E l oU
world w 3: l d

hello h @ l oU
the D @
the D i:
"""
LEXICONP = """\
hello 1.0 h @ l oU
hello 0.5 h E l oU
world 1 w 3: l d
"""
CMUDICT = """\
;;; # CMUdict  --  Major Version: 0.07
;;;
HELLO  HH AH0 L OW1
HELLO(2)  HH EH0 L OW1
READ  R EH1 D
READ(2)  R IY1 D
WORLD  W ER1 L D
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def one_line_error(excinfo: pytest.ExceptionInfo[CorpusError], *parts: str) -> str:
    """The error's message: one line naming each of ``parts``."""
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def test_kaldi_lexicon_several_prons_in_file_order_duplicates_dropped(tmp_path):
    lex = read_lexicon(write(tmp_path, "lexicon.txt", KALDI))
    assert lex.prons == {
        "!SIL": (("sil",),),
        "hello": (("h", "@", "l", "oU"), ("h", "E", "l", "oU")),
        "world": (("w", "3:", "l", "d"),),
        "the": (("D", "@"), ("D", "i:")),
    }
    assert lex.phones == ("sil", "3:", "@", "D", "E", "d", "h", "i:", "l", "oU", "w")
    assert lex.silence == SILENCE and lex.g2p_words == ()
    assert lex.phone_labels.names == lex.phones
    other = read_lexicon(write(tmp_path, "lexiconp.txt", LEXICONP))
    assert lex.phone_labels.fingerprint != other.phone_labels.fingerprint
    assert lex.fingerprint != other.fingerprint


def test_lexiconp_by_name_and_by_content(tmp_path):
    by_name = read_lexicon(write(tmp_path, "lexiconp.txt", LEXICONP))
    assert by_name.prons == {
        "hello": (("h", "@", "l", "oU"), ("h", "E", "l", "oU")),
        "world": (("w", "3:", "l", "d"),),
    }
    assert read_lexicon(write(tmp_path, "dict.txt", LEXICONP)) == by_name
    # one line without a probability: a plain lexicon.txt whose first phone is "1.0"
    plain = write(tmp_path, "lex2.txt", LEXICONP + "hi h aI\n")
    assert read_lexicon(plain).prons["hello"][0] == ("1.0", "h", "@", "l", "oU")


def test_cmudict_comments_alternates_and_stress(tmp_path):
    lex = read_lexicon(write(tmp_path, "cmudict-0.7b", CMUDICT), silence="SIL")
    assert lex.prons == {
        "HELLO": (("HH", "AH0", "L", "OW1"), ("HH", "EH0", "L", "OW1")),
        "READ": (("R", "EH1", "D"), ("R", "IY1", "D")),
        "WORLD": (("W", "ER1", "L", "D"),),
    }
    assert lex.phones[0] == "SIL" and "AH0" in lex.phones
    # cmudict.dict (lower case, trailing comments), recognised by its alternates
    modern = "read r eh1 d\nread(2) r iy1 d # past tense\n"
    lex = read_lexicon(write(tmp_path, "words.dict", modern))
    assert lex.prons == {"read": (("r", "eh1", "d"), ("r", "iy1", "d"))}


def test_format_detection_and_override(tmp_path):
    def kind(name: str, text: str) -> str:
        path = write(tmp_path, name, text)
        lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        return detect_format(path, lines)

    assert kind("lexicon.txt", KALDI) == "lexicon"
    assert kind("x.txt", LEXICONP) == "lexiconp"
    assert kind("lexiconp.txt", KALDI) == "lexiconp"
    assert kind("x.txt", CMUDICT) == "cmudict"
    assert kind("cmudict.dict", KALDI) == "cmudict"
    assert kind("x.txt", "a(2) b\n") == "lexicon"  # no "a": not an alternate
    lex = read_lexicon(write(tmp_path, "p.txt", LEXICONP), file_format="lexicon")
    assert lex.prons["hello"][0][0] == "1.0"


def test_round_trip(tmp_path):
    lex = read_lexicon(write(tmp_path, "lexicon.txt", KALDI))
    assert read_lexicon(write_lexicon(lex, tmp_path / "out" / "lexicon.txt")) == lex
    cmu = read_lexicon(write(tmp_path, "cmudict", CMUDICT), silence="SIL")
    assert read_lexicon(write_lexicon(cmu, tmp_path / "c.txt"), silence="SIL") == cmu
    wide = Lexicon(lex.prons, PHONES)  # a phone set larger than what the words use
    back = read_lexicon(write_lexicon(wide, tmp_path / "w.txt"), phones=wide.phones)
    assert back == wide and back.fingerprint == wide.fingerprint
    with pytest.raises(CorpusError) as excinfo:
        write_lexicon(Lexicon({"a b": (("sil",),)}, ("sil",)), tmp_path / "bad.txt")
    one_line_error(excinfo, "'a b'")
    with pytest.raises(CorpusError) as excinfo:
        write_lexicon(Lexicon({"a": (("sil",),), "a(2)": (("sil",),)}, ("sil",)), tmp_path / "c")
    one_line_error(excinfo, "'a(2)'", "CMUdict")
    odd = Lexicon({"a(2)": (("sil",),)}, ("sil",))
    assert read_lexicon(write_lexicon(odd, tmp_path / "odd.txt")) == odd


def test_phone_sets_from_files_and_lists(tmp_path):
    kaldi = write(tmp_path, "phones.txt", "<eps> 0\nsil 1\nh 3\n@ 2\nl 4\noU 5\n#0 6\n#1 7\n")
    assert read_phones(kaldi) == ("sil", "@", "h", "l", "oU")
    names = write(tmp_path, "labels.txt", "\n".join(PHONES) + "\n")
    assert read_phones(names) == PHONES
    lex_file = write(tmp_path, "lexicon.txt", "hello h @ l oU\n")
    assert read_lexicon(lex_file, phones=kaldi).phones == ("sil", "@", "h", "l", "oU")
    assert read_lexicon(lex_file, phones=str(names)).phones == PHONES
    assert read_lexicon(lex_file, phones=PHONES).phones == PHONES


@pytest.mark.parametrize(
    ("name", "text", "parts"),
    [
        ("lexicon.txt", "hello h @ l oU\nworld w 3: l d\nbad b X d\n", ["lexicon.txt:3", "'X'"]),
        ("lexicon.txt", "hello h @ l oU\n\nworld\n", ["lexicon.txt:3", "'world'", "no phones"]),
        ("lexiconp.txt", "hello 1.0 h @ l oU\nworld 2.5 w 3: l d\n", ["lexiconp.txt:2", "'world'"]),
        ("lexiconp.txt", "hello 1.0\n", ["lexiconp.txt:1", "no phones"]),
        ("lexicon.txt", b"hello h @ l oU\nw\xe9rld w 3: l d\n", ["lexicon.txt:2", "UTF-8"]),
        ("lexicon.txt", "\n\n", ["lexicon.txt", "no pronunciations"]),
        ("lexiconp_silprob.txt", "a 1.0 0.2 1.0 0.8 h\n", ["lexiconp_silprob.txt", "not read"]),
    ],
)
def test_bad_lexicon_lines_are_one_line_errors(tmp_path, name, text, parts):
    path = write(tmp_path, name, text)
    with pytest.raises(CorpusError) as excinfo:
        read_lexicon(path, phones=("sil", "h", "@", "l", "oU", "w", "3:", "d", "b"))
    one_line_error(excinfo, *parts)


def test_bad_files_and_phone_sets(tmp_path):
    with pytest.raises(CorpusError) as excinfo:
        read_lexicon(tmp_path / "nope.txt")
    one_line_error(excinfo, "not found", "nope.txt")
    lex_file = write(tmp_path, "lexicon.txt", "hello h @ l oU\n")
    with pytest.raises(CorpusError) as excinfo:
        read_lexicon(lex_file, phones=("h", "@", "l", "oU"))
    one_line_error(excinfo, "silence phone 'sil'")
    with pytest.raises(CorpusError) as excinfo:
        read_lexicon(lex_file, phones=write(tmp_path, "phones.txt", "sil 1\nh two\n"))
    one_line_error(excinfo, "phones.txt:2")
    with pytest.raises(CorpusError) as excinfo:
        read_phones(write(tmp_path, "dup.txt", "sil\nh\nsil\n"))
    one_line_error(excinfo, "dup.txt:3", "'sil'")
    with pytest.raises(CorpusError) as excinfo:
        read_lexicon(lex_file, file_format="htk")  # type: ignore[arg-type]
    one_line_error(excinfo, "'htk'")


TRANSCRIPTS = {"u1": "hello world", "u2": "the world", "u3": "hello hello"}


def kaldi_lexicon(tmp_path: Path) -> Lexicon:
    return read_lexicon(write(tmp_path, "lexicon.txt", KALDI), phones=PHONES)


def test_lexicon_for_restricts_to_the_transcripts(tmp_path):
    lex, report, left_out = lexicon_for(TRANSCRIPTS, kaldi_lexicon(tmp_path), None)
    assert lex.words == ["hello", "the", "world"] and lex.phones == PHONES
    assert lex.prons["the"] == (("D", "@"), ("D", "i:"))
    assert report.words == ("hello", "world", "the") and report.found == report.words
    assert report.g2p == () and report.failed == {} and left_out == []
    assert "3 words: 3 in the lexicon, 0 from G2P" in report.summary()


def test_missing_word_without_g2p_names_word_and_first_utterance(tmp_path):
    transcripts = {"u1": "hello world", "u2": "the zebra", "u3": "zebra world"}
    with pytest.raises(CorpusError) as excinfo:
        lexicon_for(transcripts, kaldi_lexicon(tmp_path), None)
    one_line_error(excinfo, "'zebra'", "utterance u2", NO_G2P)
    lex, report, left_out = lexicon_for(transcripts, kaldi_lexicon(tmp_path), None, skip_bad=True)
    assert [utt for utt, _ in left_out] == ["u2", "u3"]
    assert all("'zebra'" in reason for _, reason in left_out)
    assert lex.words == ["hello", "world"]  # "the" only in a left-out utterance
    assert report.failed == {"zebra": NO_G2P}


def test_empty_transcript(tmp_path):
    with pytest.raises(CorpusError) as excinfo:
        lexicon_for({"u1": "hello", "u2": "  "}, kaldi_lexicon(tmp_path), None)
    one_line_error(excinfo, "utterance u2", "empty transcript")
    _, _, left_out = lexicon_for(
        {"u1": "hello", "u2": ""}, kaldi_lexicon(tmp_path), None, skip_bad=True
    )
    assert left_out == [("u2", "utterance u2: empty transcript")]
    with pytest.raises(CorpusError) as excinfo:
        lexicon_for({"u1": "hello"}, None, None)
    one_line_error(excinfo, "no lexicon and no G2P")


def test_g2p_fills_the_gaps_and_the_report_lists_them(tmp_path):
    transcripts = {"u1": "hello zebra", "u2": "the water [noise]", "u3": "world"}
    lex, report, left_out = lexicon_for(
        transcripts, kaldi_lexicon(tmp_path), "en-us", skip_bad=True
    )
    assert report.g2p == ("zebra", "water") and report.language == "en-us"
    assert report.found == ("hello", "the", "world")
    assert list(report.failed) == ["[noise]"] and "G2P failed" in report.failed["[noise]"]
    assert left_out == [("u2", f"utterance u2: word '[noise]' has no pronunciation "
                                f"({report.failed['[noise]']})")]  # fmt: skip
    assert lex.words == ["hello", "world", "zebra"] and lex.g2p_words == ("zebra",)
    assert lex.prons["zebra"] == (("z", "i:", "b", "r", "@"),)
    assert lex.prons["hello"] == kaldi_lexicon(tmp_path).prons["hello"]  # the lexicon first
    assert report.to_dict()["g2p"] == ["zebra", "water"]
    with pytest.raises(CorpusError) as excinfo:
        lexicon_for(transcripts, kaldi_lexicon(tmp_path), "en-us")
    one_line_error(excinfo, "'[noise]'", "utterance u2", "not a spoken word")


def test_g2p_only_and_phones_outside_the_lexicon(tmp_path):
    lex, report, _ = lexicon_for({"u1": "cat sat"}, None, "en-us")
    assert lex.prons == {"cat": (("k", "a", "t"),), "sat": (("s", "a", "t"),)}
    assert lex.phones == ("sil", "a", "k", "s", "t") and lex.g2p_words == ("cat", "sat")
    fixed, _, _ = lexicon_for({"u1": "cat sat"}, Lexicon({}, PHONES), "en-us")
    assert fixed.phones == PHONES and fixed.prons == lex.prons
    cmu = read_lexicon(write(tmp_path, "cmudict", CMUDICT), silence="SIL")
    _, report, left_out = lexicon_for({"u1": "HELLO cat"}, cmu, "en-us", skip_bad=True)
    assert report.g2p == () and "not in the lexicon's phone set" in report.failed["cat"]
    assert [utt for utt, _ in left_out] == ["u1"]
    with pytest.raises(CorpusError) as excinfo:
        lexicon_for({"u1": "cat"}, None, "xx-nonsense")
    one_line_error(excinfo, "'xx-nonsense'")
