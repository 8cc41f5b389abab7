"""``kdpipe corpus synth keywords|phones``: thin commands, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from kdpipe.cli.main import app

SMALL = ["--num-utts", "6", "--num-voices", "3", "--jobs", "1"]


def test_keywords_command_and_non_empty_refusal(tmp_path):
    out = tmp_path / "kw"
    args = ["corpus", "synth", "keywords", str(out), *SMALL, "--words", "yes,no", "--seed", "4"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "6 utterances" in r.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["no", "yes"]
    assert json.loads((out / "synth.json").read_text())["config"]["seed"] == 4

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1
    assert "not empty" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output


def test_phones_command_units_and_bad_options(tmp_path):
    out = tmp_path / "ph"
    r = CliRunner().invoke(
        app, ["corpus", "synth", "phones", str(out), *SMALL, "--units", "states"]
    )
    assert r.exit_code == 0, r.output
    assert len((out / "labels.txt").read_text().splitlines()) == 3 * 56
    assert (out / "train" / "ali.txt").is_file()

    r = CliRunner().invoke(
        app, ["corpus", "synth", "phones", str(tmp_path / "x"), "--units", "words"]
    )
    assert r.exit_code == 1 and "units must be one of" in r.output
    r = CliRunner().invoke(
        app, ["corpus", "synth", "keywords", str(tmp_path / "y"), "--size", "huge"]
    )
    assert r.exit_code == 1 and "unknown size 'huge'" in r.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from kdpipe.cli.main import app\n"
        "r = CliRunner().invoke(app, ['corpus', 'synth', 'keywords', '--help'])\n"
        "assert r.exit_code == 0 and '--num-voices' in r.output, r.output\n"
        "heavy = ('torch', 'soxr', 'soundfile', 'kdpipe.corpus.synth')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
