"""Reader for the Google Speech Commands folder layout (clip task).

Layout::

    ROOT/<label>/<speaker>_nohash_<n>.wav    one clip; the folder name is its label
    ROOT/validation_list.txt                 paths relative to ROOT: the dev split
    ROOT/testing_list.txt                    paths relative to ROOT: the test split
    ROOT/_background_noise_/...              ignored (as is every '_' or '.' folder)

Everything not listed is train. The label set is the sorted folder names; the speaker is the
file name before ``_nohash_`` ("unknown" without it); the utterance id is the relative path
without ``.wav`` (``yes/0a7c2a8d_nohash_0``).
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.corpus.manifest import Corpus, Utterance
from kdpipe.corpus.readers.problems import Problems
from kdpipe.errors import CorpusError
from kdpipe.labels import LabelSet
from kdpipe.textfile import read_text

LISTS = {"dev": "validation_list.txt", "test": "testing_list.txt"}


def read_speech_commands(root: str | Path, skip_bad: bool = False) -> Corpus:
    """Read a Speech Commands folder; see the module docstring for the layout."""
    root = Path(root)
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    folders = [d for d in folders if any(d.glob("*.wav"))]
    if not folders:
        raise CorpusError(f"{root}: no <label>/*.wav folders (Speech Commands layout)")
    labels = LabelSet(tuple(d.name for d in folders))
    split_of = _read_lists(root)
    problems = Problems(skip_bad)
    utts = []
    seen: set[str] = set()
    for d in folders:
        for wav in sorted(d.glob("*.wav")):
            rel = f"{d.name}/{wav.name}"
            seen.add(rel)
            utt_id = rel[: -len(".wav")]
            if any(c.isspace() for c in utt_id):
                problems.add(utt_id, f"{wav}: file name contains whitespace")
                continue
            speaker = wav.stem.split("_nohash_")[0] if "_nohash_" in wav.stem else "unknown"
            utts.append(
                Utterance(
                    id=utt_id,
                    speaker=speaker,
                    split=split_of.get(rel, "train"),
                    audio=str(wav),
                    label=d.name,
                )
            )
    for rel, split in sorted(split_of.items()):
        if rel not in seen:
            problems.add(rel, f"{root / LISTS[split]}: lists {rel}, which is not a wav in {root}")
    return Corpus(
        utterances=utts,
        labels=labels,
        task="clip",
        source=str(root),
        format="speech_commands",
        skipped=problems.skipped,
    )


def _read_lists(root: Path) -> dict[str, str]:
    """Relative wav path -> split, from the validation and testing lists."""
    split_of: dict[str, str] = {}
    for split, name in LISTS.items():
        path = root / name
        if not path.is_file():
            continue
        for n, line in enumerate(read_text(path, CorpusError).splitlines(), 1):
            rel = line.strip().replace("\\", "/")
            if not rel:
                continue
            if rel in split_of and split_of[rel] != split:
                raise CorpusError(
                    f"{path}:{n}: {rel} is also in {LISTS[split_of[rel]]}; "
                    "a clip can be in only one split"
                )
            split_of[rel] = split
    return split_of
