"""Token units of CTC models: phones, characters or BPE pieces, with the CTC blank.

A CTC model predicts, per frame, one of its tokens or the blank. ``TokenUnits`` is that
token set: its ``labels`` (``LabelSet``: ``BLANK`` at index 0, then ``tokens``) are the
label set of the model and of the target store, fingerprinted and checked like every
label set, and ``encode`` turns a transcript into the label indices (>= 1, never blank)
that are the CTC target. Which units (``--units``) a ``UnitsSpec`` says:

- ``phones``: the non-silence phones of a lexicon (``kdpipe.corpus.lexicon``; silence is
  the lexicon's ``silence`` and any of ``metrics.SILENCE``), in the lexicon's order; a
  transcript becomes the first pronunciation of each word, concatenated, no silence.
  ``build_units`` takes the lexicon and/or an eSpeak NG G2P voice; the units keep the
  lexicon as given plus the G2P pronunciations of the training words (``lexicon_for``),
  so a later transcript may use any word the lexicon has but no new G2P word. Phones
  give no words back (``words`` is None).
- ``chars``: ``WORD_BOUNDARY`` (index 1) then the sorted distinct characters of the
  training transcripts, white space left out; a transcript becomes its characters with
  ``|`` between words (not at the ends), as wav2vec2's CTC vocabularies do. Nothing is
  lower-cased or normalised: what the transcripts hold is what the model learns.
- ``bpe:N``: a sentencepiece BPE model trained on the transcripts with vocabulary size
  N, so the label set has N labels: sentencepiece's ``<unk>`` (its piece 0) is where the
  blank goes, every other piece id is its label index, and ``<s>``/``</s>`` are off.
  Training is deterministic (one thread, the transcripts in utterance-id order, no
  sampling): the same transcripts give the same model bytes. Its text normalisation is
  ``identity`` (no NFKC, for the reason chars does none) and every character of the
  transcripts is a piece (``character_coverage`` 1.0), so ``<unk>`` is never emitted: a
  character outside the training transcripts is an error, not a silent ``<unk>``.

Transcripts are split on white space (any run of it is one word boundary) for every kind.
An empty transcript, a word without a pronunciation or a character outside the units is a
``CorpusError`` naming the utterance (``where``) and the word or character.

On disk (``write`` / ``read``) a units folder holds ``units.json`` (``record``: kind,
tokens, blank, fingerprints), ``bpe.model`` (the sentencepiece model proto, bpe) and
``lexicon.txt`` (``write_lexicon``, phones; its phone set, silence and G2P words are in
``units.json``). ``read`` rebuilds the units from the files and refuses them when the
fingerprint it computes is not the one ``units.json`` recorded.

sentencepiece is imported inside the functions that use it (a compiled package; light
importers such as ``kdpipe --help`` must not pay for it).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdpipe.corpus.lexicon import Lexicon, lexicon_for, read_lexicon, write_lexicon
from kdpipe.errors import ConfigError, CorpusError, KdpipeError, LabelSetError
from kdpipe.labels import LabelSet
from kdpipe.metrics import SILENCE as SILENCE_PHONES
from kdpipe.schema import fingerprint
from kdpipe.textfile import read_text

if TYPE_CHECKING:
    import sentencepiece

BLANK = "<blk>"  # the CTC blank, always index 0 of the label set
WORD_BOUNDARY = "|"  # chars units: the token between words (wav2vec2's convention)
UNIT_KINDS = ("phones", "chars", "bpe")
UNITS_FILE = "units.json"
BPE_FILE = "bpe.model"
LEXICON_FILE = "lexicon.txt"
UNITS_FORMAT = 1  # the version of units.json; a newer one is refused, not misread
MIN_BPE_SIZE = 2  # blank (sentencepiece's <unk>) and one piece; the transcripts may need more
SPACE_PIECE = "\u2581"  # sentencepiece's word-start mark; a transcript may not hold it
SP_MAX_SENTENCE = 4192  # sentencepiece's default longest sentence (bytes); longer ones raise it

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


@dataclass(frozen=True)
class UnitsSpec:
    """Which units: ``phones``, ``chars`` or ``bpe`` with its vocabulary ``size``."""

    kind: str
    size: int | None = None  # bpe only: the vocabulary size, blank included; required there

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ConfigError(f"units: unknown kind {self.kind!r}; {_KNOWN}")
        if self.kind != "bpe":
            if self.size is not None:
                raise ConfigError(f"units: {self.kind} takes no size (got {self.size!r})")
            return
        if self.size is None:
            raise ConfigError("units: bpe needs a vocabulary size, e.g. bpe:500")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise ConfigError(
                f"units: the bpe vocabulary size must be an integer, got {self.size!r}"
            )
        if self.size < MIN_BPE_SIZE:
            raise ConfigError(
                f"units: the bpe vocabulary size must be >= {MIN_BPE_SIZE}, got {self.size}"
            )

    @classmethod
    def parse(cls, text: str) -> UnitsSpec:
        """``phones``, ``chars`` or ``bpe:N`` (``--units``); ``ConfigError`` otherwise."""
        kind, colon, size = str(text).strip().partition(":")
        if not colon:
            return cls(kind)
        if kind != "bpe":
            raise ConfigError(f"units {text!r}: only bpe takes a size; {_KNOWN}")
        if not size.strip().isdigit():
            raise ConfigError(f"units {text!r}: the bpe vocabulary size must be a whole number")
        return cls(kind, int(size))

    def __str__(self) -> str:
        return self.kind if self.size is None else f"{self.kind}:{self.size}"


_KNOWN = "known: phones, chars, bpe:N (N the vocabulary size)"


@dataclass(frozen=True)
class TokenUnits:
    """A CTC token set: ``BLANK`` at label index 0, ``tokens[i]`` at index ``i + 1``.

    Built by ``build_units`` or ``read``; the constructor checks that the fields agree
    (the bpe model's pieces are the tokens, the lexicon's phones are, chars' tokens are
    single characters and ``WORD_BOUNDARY``) and raises ``CorpusError`` otherwise.
    """

    kind: str  # one of UNIT_KINDS
    tokens: tuple[str, ...]  # the tokens without blank, label index i + 1
    bpe_model: bytes | None = None  # bpe: the sentencepiece model proto
    lexicon: Lexicon | None = None  # phones: words -> phones (the first pronunciation used)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        if self.kind not in UNIT_KINDS:
            raise CorpusError(f"units: unknown kind {self.kind!r}; known: {', '.join(UNIT_KINDS)}")
        if not self.tokens:
            raise CorpusError(f"{self.kind} units: no tokens")
        if BLANK in self.tokens:
            raise CorpusError(f"{self.kind} units: token {BLANK!r} is the CTC blank's name")
        if (self.bpe_model is not None) != (self.kind == "bpe"):
            raise CorpusError(f"{self.kind} units: a bpe model goes with bpe units alone")
        if (self.lexicon is not None) != (self.kind == "phones"):
            raise CorpusError(f"{self.kind} units: a lexicon goes with phones units alone")
        try:
            labels = self.labels  # duplicate or space-padded names fail here
        except LabelSetError as error:
            raise CorpusError(f"{self.kind} units: {error}") from None
        assert labels.names[self.blank] == BLANK
        if self.kind == "chars":
            bad = [t for t in self.tokens if len(t) != 1 or t.isspace()]
            if bad or WORD_BOUNDARY not in self.tokens:
                what = f"token {bad[0]!r} is not one character" if bad else "no word boundary"
                raise CorpusError(f"chars units: {what}")
        elif self.kind == "phones":
            assert self.lexicon is not None
            phones = _token_phones(self.lexicon)
            if phones != self.tokens:
                raise CorpusError(
                    f"phones units: the tokens are not the lexicon's non-silence phones "
                    f"({len(self.tokens)} tokens, {len(phones)} phones)"
                )
        else:
            pieces = _pieces(self._processor)
            if pieces[1:] != self.tokens:
                raise CorpusError(
                    f"bpe units: the tokens are not the bpe model's pieces "
                    f"({len(self.tokens)} tokens, {len(pieces) - 1} pieces)"
                )

    @functools.cached_property
    def labels(self) -> LabelSet:
        """The label set of the model and the store: ``(BLANK, *tokens)``."""
        return LabelSet((BLANK, *self.tokens))

    @property
    def blank(self) -> int:
        """The blank's label index: 0."""
        return 0

    @property
    def spec(self) -> UnitsSpec:
        """The ``UnitsSpec`` these units answer (bpe: size = the number of labels)."""
        return UnitsSpec(self.kind, len(self.labels) if self.kind == "bpe" else None)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identity of the kind, the tokens, the bpe model bytes and the lexicon."""
        return fingerprint(
            [
                self.kind,
                list(self.tokens),
                _sha256(self.bpe_model) if self.bpe_model is not None else None,
                self.lexicon.fingerprint if self.lexicon is not None else None,
            ]
        )

    def encode(self, text: str, where: str = "") -> list[int]:
        """The label indices (>= 1, never blank) of transcript ``text``; ``CorpusError``
        naming ``where`` (an utterance) for an empty transcript, a word without a
        pronunciation or a character outside the units."""
        at = f"{where}: " if where else ""
        words = text.split()
        if not words:
            raise CorpusError(f"{at}empty transcript")
        index = self.labels.index
        if self.kind == "phones":
            assert self.lexicon is not None
            out: list[int] = []
            for word in words:
                prons = self.lexicon.prons.get(word)
                if prons is None:
                    raise CorpusError(
                        f"{at}word {word!r} has no pronunciation in the phones units' lexicon"
                    )
                out += [index(p) for p in prons[0] if p in self.labels]
            if not out:
                raise CorpusError(f"{at}the transcript has only silence phones")
            return out
        self._check_chars(words, at)
        if self.kind == "chars":
            joined = WORD_BOUNDARY.join(words)
            return [index(c) for c in joined]
        ids = [int(i) for i in self._processor.encode(" ".join(words))]
        if self.blank in ids:  # sentencepiece's <unk>; _check_chars should have said why
            raise CorpusError(f"{at}the bpe model cannot encode {' '.join(words)!r}")
        return ids

    def token_names(self, ids: Iterable[int]) -> list[str]:
        """The label names of label indices ``ids`` (blank is ``BLANK``)."""
        names = self.labels.names
        return [names[self._checked(i)] for i in ids]

    def words(self, ids: Iterable[int]) -> list[str] | None:
        """The words label indices ``ids`` spell (blanks skipped): chars split on
        ``WORD_BOUNDARY``, bpe through sentencepiece's decode; None for phones."""
        kept = [i for i in (self._checked(i) for i in ids) if i != self.blank]
        if self.kind == "phones":
            return None
        if self.kind == "chars":
            text = "".join(self.labels.names[i] for i in kept)
            return [w for w in text.split(WORD_BOUNDARY) if w]
        return str(self._processor.decode(kept)).split()

    def record(self) -> dict[str, Any]:
        """What ``units.json`` holds: JSON-able, without the model bytes."""
        out: dict[str, Any] = {
            "format": UNITS_FORMAT,
            "kind": self.kind,
            "units": str(self.spec),
            "blank": BLANK,
            "blank_index": self.blank,
            "tokens": list(self.tokens),
            "fingerprint": self.fingerprint,
        }
        if self.bpe_model is not None:
            out["bpe_model"] = {"file": BPE_FILE, "sha256": _sha256(self.bpe_model)}
        if self.lexicon is not None:
            out["lexicon"] = {
                "file": LEXICON_FILE,
                "fingerprint": self.lexicon.fingerprint,
                "phones": list(self.lexicon.phones),
                "silence": self.lexicon.silence,
                "g2p_words": list(self.lexicon.g2p_words),
            }
        return out

    def write(self, folder: str | Path) -> None:
        """``units.json`` (written last), ``bpe.model`` (bpe), ``lexicon.txt`` (phones)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        if self.bpe_model is not None:
            (out / BPE_FILE).write_bytes(self.bpe_model)
        if self.lexicon is not None:
            write_lexicon(self.lexicon, out / LEXICON_FILE)
        text = json.dumps(self.record(), indent=1, ensure_ascii=False) + "\n"
        (out / UNITS_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def read(cls, folder: str | Path) -> TokenUnits:
        """The units ``write`` left in ``folder``; one-line ``CorpusError`` naming the file
        when one is missing or corrupt, or the files do not give the recorded fingerprint."""
        p = Path(folder) / UNITS_FILE
        try:
            record = json.loads(read_text(p, CorpusError, "units file"))
        except json.JSONDecodeError as error:
            raise CorpusError(f"{p}: not JSON ({error.msg}, line {error.lineno})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{p}: expected a JSON object")
        if record.get("format") != UNITS_FORMAT:
            raise CorpusError(
                f"{p}: units format {record.get('format')!r}; this kdpipe reads {UNITS_FORMAT}"
            )
        kind, tokens, recorded = record.get("kind"), record.get("tokens"), record.get("fingerprint")
        if kind not in UNIT_KINDS:
            raise CorpusError(f"{p}: unknown units kind {kind!r}")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise CorpusError(f"{p}: 'tokens' must be a list of strings")
        if record.get("blank") != BLANK or record.get("blank_index") != 0:
            raise CorpusError(f"{p}: the blank must be {BLANK!r} at index 0")
        bpe_model = _read_bpe(p.parent / BPE_FILE) if kind == "bpe" else None
        lexicon = _read_units_lexicon(p, record.get("lexicon")) if kind == "phones" else None
        try:
            units = cls(kind, tuple(tokens), bpe_model, lexicon)
        except KdpipeError as error:
            raise CorpusError(f"{p}: {error}") from None
        if units.fingerprint != recorded:
            raise CorpusError(
                f"{p}: records fingerprint {recorded!r} but its files give {units.fingerprint!r} "
                "(edited, or files from another units folder)"
            )
        return units

    def check_same(self, other: TokenUnits, what: str, other_what: str) -> None:
        """Raise a ``LabelSetError`` naming the first difference between ``self`` (of
        ``what``) and ``other``: kind, label set, bpe model or lexicon."""
        head = f"units of {what} disagree with {other_what}"
        if self.kind != other.kind:
            raise LabelSetError(f"{head}: {self.kind} vs {other.kind}")
        self.labels.check_same(other.labels, what, other_what)
        if self.bpe_model != other.bpe_model:
            raise LabelSetError(f"{head}: same pieces, but the bpe models differ")
        mine, theirs = self.lexicon, other.lexicon
        if mine is not None and theirs is not None and mine.fingerprint != theirs.fingerprint:
            raise LabelSetError(f"{head}: {_lexicon_difference(mine, theirs)}")

    def _checked(self, i: int) -> int:
        """``i`` as a label index; ``LabelSetError`` outside 0..C-1."""
        n = len(self.labels)
        if not 0 <= int(i) < n:
            raise LabelSetError(f"label index {int(i)} is outside the units' 0..{n - 1}")
        return int(i)

    def _check_chars(self, words: list[str], at: str) -> None:
        """``CorpusError`` for the first character of ``words`` the units cannot spell."""
        allowed = self._chars
        for word in words:
            for ch in word:
                if ch not in allowed:
                    raise CorpusError(
                        f"{at}character {ch!r} (in {word!r}) is not in the {self.spec} units"
                    )

    @functools.cached_property
    def _chars(self) -> frozenset[str]:
        """The characters a word may hold: chars' tokens but the boundary, bpe's pieces'."""
        if self.kind == "chars":
            return frozenset(self.tokens) - {WORD_BOUNDARY}
        return frozenset("".join(self.tokens)) - {SPACE_PIECE}

    @functools.cached_property
    def _processor(self) -> sentencepiece.SentencePieceProcessor:
        """The sentencepiece model of bpe units, loaded once."""
        assert self.bpe_model is not None
        return _load_bpe(self.bpe_model)


def build_units(
    spec: UnitsSpec,
    transcripts: Mapping[str, str],
    *,
    lexicon: Lexicon | None = None,
    g2p: str | None = None,
) -> TokenUnits:
    """The ``spec`` units of ``transcripts`` (utterance id -> text, the training set).

    phones take ``lexicon`` and/or the eSpeak NG voice ``g2p`` (``lexicon_for``): every
    word needs a pronunciation. chars and bpe learn their tokens from the transcripts and
    take neither. ``CorpusError`` names the utterance of an empty transcript or of a
    character no unit may hold; ``ConfigError`` for a bpe size the transcripts cannot fill.
    """
    if spec.kind != "phones" and (lexicon is not None or g2p is not None):
        raise ConfigError(f"units {spec}: a lexicon or G2P is for phones units only")
    if not transcripts:
        raise CorpusError(f"units {spec}: no transcripts to build them from")
    texts = {utt: " ".join(transcripts[utt].split()) for utt in sorted(transcripts)}
    empty = next((utt for utt, text in texts.items() if not text), None)
    if empty is not None:
        raise CorpusError(f"utterance {empty}: empty transcript")
    if spec.kind == "phones":
        phones_lexicon = _phones_lexicon(texts, lexicon, g2p)
        return TokenUnits("phones", _token_phones(phones_lexicon), lexicon=phones_lexicon)
    if spec.kind == "chars":
        for utt, text in texts.items():
            if WORD_BOUNDARY in text:
                raise CorpusError(
                    f"utterance {utt}: holds {WORD_BOUNDARY!r}, the word boundary of chars units"
                )
        chars = sorted({ch for text in texts.values() for ch in text if not ch.isspace()})
        return TokenUnits("chars", (WORD_BOUNDARY, *chars))
    assert spec.size is not None
    model = _train_bpe(texts, spec.size)
    return TokenUnits("bpe", _pieces(_load_bpe(model))[1:], bpe_model=model)


def _phones_lexicon(texts: Mapping[str, str], lexicon: Lexicon | None, g2p: str | None) -> Lexicon:
    """``lexicon`` as given plus G2P's pronunciations of the words of ``texts`` it lacks."""
    needed, _, _ = lexicon_for(texts, lexicon, g2p)
    if lexicon is None:
        return needed
    if not needed.g2p_words:
        return lexicon
    guessed = {w: needed.prons[w] for w in needed.g2p_words}
    g2p_words = tuple(dict.fromkeys((*lexicon.g2p_words, *needed.g2p_words)))
    return Lexicon({**lexicon.prons, **guessed}, lexicon.phones, lexicon.silence, g2p_words)


def _token_phones(lexicon: Lexicon) -> tuple[str, ...]:
    """The phones that are tokens: the lexicon's, silence (its own and the usual) left out."""
    return tuple(p for p in lexicon.nonsilence_phones if p not in SILENCE_PHONES)


def _train_bpe(texts: Mapping[str, str], size: int) -> bytes:
    """The bytes of a sentencepiece BPE model of ``texts`` with ``size`` pieces."""
    import sentencepiece  # compiled; only bpe units need it

    for utt, text in texts.items():
        if SPACE_PIECE in text:
            raise CorpusError(
                f"utterance {utt}: holds {SPACE_PIECE!r}, sentencepiece's word-start mark"
            )
    longest = max(len(text.encode("utf-8")) for text in texts.values())
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts.values())),
            model_writer=model,
            model_type="bpe",
            vocab_size=size,
            character_coverage=1.0,  # every character a piece: <unk> is never emitted
            normalization_rule_name="identity",  # what the transcripts hold is what is learnt
            unk_id=0,  # the blank's place in the label set
            bos_id=-1,  # no sentence marks: CTC targets are the pieces alone
            eos_id=-1,
            pad_id=-1,
            num_threads=1,  # one thread: the same transcripts give the same bytes
            max_sentence_length=max(SP_MAX_SENTENCE, longest + 1),  # no transcript skipped
            minloglevel=3,  # no log lines: kdpipe's console reports
        )
    except RuntimeError as error:
        raise ConfigError(_bpe_problem(str(error), size)) from None
    return model.getvalue()


def _bpe_problem(message: str, size: int) -> str:
    """sentencepiece's training error as one line saying which sizes work."""
    if high := _TOO_HIGH.search(message):
        return (
            f"units bpe:{size}: too many pieces for these transcripts; "
            f"at most bpe:{high.group(2)} works"
        )
    if low := _TOO_LOW.search(message):
        return (
            f"units bpe:{size}: too few pieces for these transcripts' characters; "
            f"at least bpe:{low.group(2)} is needed"
        )
    lines = message.strip().splitlines() or ["no reason given"]
    reason = re.sub(r"^.*?\] ", "", lines[-1])  # without "INTERNAL: src/x.cc(1) [check] "
    return f"units bpe:{size}: sentencepiece cannot train: {reason}"


def _load_bpe(model: bytes) -> sentencepiece.SentencePieceProcessor:
    """A sentencepiece processor of ``model``; ``CorpusError`` for bytes that are not one."""
    import sentencepiece  # compiled; only bpe units need it

    if not model:
        raise CorpusError("bpe units: the bpe model is empty")
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=model)
    except RuntimeError:
        raise CorpusError("bpe units: the bpe model is not a sentencepiece model") from None


def _pieces(processor: sentencepiece.SentencePieceProcessor) -> tuple[str, ...]:
    """Every piece by id; ``CorpusError`` unless piece 0 is ``<unk>`` (the blank's place)."""
    n = processor.get_piece_size()
    if (
        n < MIN_BPE_SIZE
        or processor.unk_id() != 0
        or processor.bos_id() != -1
        or processor.eos_id() != -1
    ):
        raise CorpusError("bpe units: the bpe model is not one kdpipe trained (<unk> at 0, no <s>)")
    return tuple(processor.id_to_piece(i) for i in range(n))


def _read_bpe(path: Path) -> bytes:
    """The bytes of a units folder's ``bpe.model``."""
    if not path.is_file():
        raise CorpusError(f"bpe model not found: {path}")
    try:
        return path.read_bytes()
    except OSError as error:
        raise CorpusError(f"{path}: cannot read: {error.strerror or error}") from None


def _read_units_lexicon(units_file: Path, entry: Any) -> Lexicon:
    """The lexicon of phones units: ``lexicon.txt`` with the phone set ``units.json`` keeps."""
    if not isinstance(entry, dict):
        raise CorpusError(f"{units_file}: phones units need a 'lexicon' entry")
    phones, silence, g2p_words = entry.get("phones"), entry.get("silence"), entry.get("g2p_words")
    if not isinstance(phones, list) or not all(isinstance(p, str) for p in phones):
        raise CorpusError(f"{units_file}: lexicon 'phones' must be a list of strings")
    if not isinstance(silence, str):
        raise CorpusError(f"{units_file}: lexicon 'silence' must be a string")
    if not isinstance(g2p_words, list) or not all(isinstance(w, str) for w in g2p_words):
        raise CorpusError(f"{units_file}: lexicon 'g2p_words' must be a list of strings")
    path = units_file.parent / LEXICON_FILE
    read = read_lexicon(path, phones=phones, silence=silence, file_format="lexicon")
    try:
        return Lexicon(read.prons, read.phones, read.silence, tuple(g2p_words))
    except CorpusError as error:
        raise CorpusError(f"{path}: {error}") from None


def _lexicon_difference(a: Lexicon, b: Lexicon) -> str:
    """The first difference of two lexicons: a word's pronunciations, or the phone set."""
    if a.phones != b.phones or a.silence != b.silence:
        return "the lexicons' phone sets differ"
    for word in sorted(set(a.prons) | set(b.prons)):
        pa, pb = a.prons.get(word), b.prons.get(word)
        if pa != pb:
            show = [" ".join(p[0]) if p else "missing" for p in (pa, pb)]
            return f"the lexicons differ at word {word!r}: {show[0]!r} vs {show[1]!r}"
    return "the lexicons' G2P words differ"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
