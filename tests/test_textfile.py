"""The one reader of users' text files: UTF-8, a BOM dropped, else one line naming the file."""

from __future__ import annotations

import pytest

from kdpipe.corpus.manifest import Utterance, read_manifest, write_manifest
from kdpipe.errors import ConfigError, CorpusError
from kdpipe.textfile import read_text


def test_a_bom_is_dropped_and_bad_bytes_named_by_line_and_offset(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"\xef\xbb\xbfone\ntwo\n")
    assert read_text(path, ConfigError) == "one\ntwo\n"
    path.write_bytes(b"one\ntw\xe9\n")
    with pytest.raises(CorpusError, match=r"f\.txt:2: not UTF-8 text \(byte 0xe9 at offset 6\)"):
        read_text(path, CorpusError)
    with pytest.raises(ConfigError, match=r"^lexicon file not found: .*nope\.txt$"):
        read_text(tmp_path / "nope.txt", ConfigError, "lexicon file")


def test_a_manifest_saved_with_a_bom_reads_the_same(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, [Utterance("u1", speaker="s1", audio="a.wav", text="hi")])
    plain = read_manifest(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as a Windows editor saves it
    assert read_manifest(path) == plain
