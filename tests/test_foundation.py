"""The shared core: label sets, config helpers, string columns in zarr, the CLI root."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from kdpipe.corpus.features import FbankConfig
from kdpipe.errors import ConfigError, LabelSetError
from kdpipe.labels import LabelSet
from kdpipe.schema import from_dict, to_dict


def test_labelset_encode_and_errors(tmp_path):
    ls = LabelSet(("sil", "a", "b"))
    assert ls.encode(["a", "b", "sil"]) == [1, 2, 0]
    with pytest.raises(LabelSetError, match="utt1: label 'c'"):
        ls.encode(["c"], where="utt1")
    with pytest.raises(LabelSetError, match="duplicate"):
        LabelSet(("a", "a"))
    ls.write(tmp_path / "labels.txt")
    assert LabelSet.read(tmp_path / "labels.txt") == ls
    with pytest.raises(LabelSetError, match="label 1 is 'a' vs 'x'"):
        ls.check_same(LabelSet(("sil", "x", "b")), "the store", "the student")


def test_config_rejects_unknown_keys_and_round_trips():
    cfg = FbankConfig.from_dict({"num_mel_bins": 80, "cmvn": "global"})
    assert FbankConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown key.*'num_mel_bin'"):
        FbankConfig.from_dict({"num_mel_bin": 80})
    with pytest.raises(ConfigError, match="cmvn"):
        FbankConfig.from_dict({"cmvn": "per-speaker"})
    assert cfg.fingerprint != FbankConfig().fingerprint


def test_num_frames_matches_kaldi_rule():
    cfg = FbankConfig()
    assert cfg.num_frames(16000) == 98  # 1 + (16000 - 400) // 160
    assert cfg.num_frames(399) == 0
    assert FbankConfig(snip_edges=False).num_frames(16000) == 100


def test_from_dict_missing_field_is_config_error():
    @dataclasses.dataclass(frozen=True)
    class Needs:
        x: int

    with pytest.raises(ConfigError, match="Needs"):
        from_dict(Needs, {})
    assert to_dict(Needs(3)) == {"x": 3}


def test_string_columns_round_trip():
    from kdpipe.corpus.featarrays import decode_strings, encode_strings

    for values in (["utt-1", "ünïcode", "", "a" * 300], []):
        utf8, offsets = encode_strings(values)
        assert decode_strings({"ids/utf8": utf8, "ids/offsets": offsets}, "ids") == values


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from kdpipe.cli.main import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = sorted({m for m in ('torch', 'zarr', 'polars', 'h5py') if m in sys.modules})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
