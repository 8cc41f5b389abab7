"""``Problems``: what a reader does with a bad utterance (raise it, or skip and record it)."""

from __future__ import annotations

from kdpipe.errors import CorpusError


class Problems:
    """Collects per-utterance problems: raise the first, or record all with ``skip_bad``."""

    def __init__(self, skip_bad: bool, error: type[CorpusError] = CorpusError) -> None:
        self.skip_bad = skip_bad
        self.error = error
        self.skipped: list[tuple[str, str]] = []
        self.bad: set[str] = set()

    def add(self, utt_id: str, reason: str, error: type[CorpusError] | None = None) -> None:
        """One problem with ``utt_id``; ``reason`` is a one-line message that names it."""
        if not self.skip_bad:
            raise (error or self.error)(reason)
        if utt_id not in self.bad:
            self.bad.add(utt_id)
            self.skipped.append((utt_id, reason))
