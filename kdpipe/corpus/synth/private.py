"""Private copies of eSpeak NG for ``espeak``: the library, and a data folder that finds
the English accents fast.

- The library is copied under its own path: ``dlopen`` of that path gives an instance of
  its own, even if something else in the process loaded the original, so unloading and
  reloading it really starts from clean static state.
- ``espeak_SetVoiceByName("en-us")`` scans every voice file of every language (about 4 ms)
  unless ``voices/en-us`` exists. The private data folder links everything of the shipped
  one and adds such files for the English accents (copies of ``lang/gmw/en*``); the samples
  are the same (checked by hash), voice loading takes about half the time per utterance.

Both live in ``<tmp>/kdpipe-espeak-<uid>-<hash of the library>`` and are made once,
atomically, so concurrent workers never see half of them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from kdpipe.errors import SynthError


def data_path() -> Path:
    """The ``espeak-ng-data`` folder shipped by ``espeakng-loader``."""
    try:  # imported here so that a missing eSpeak NG is a SynthError, not an ImportError
        import espeakng_loader
    except ImportError:
        raise SynthError(
            "eSpeak NG is not installed: pip install espeakng-loader (a kdpipe dependency)"
        ) from None
    try:
        return Path(espeakng_loader.get_data_path())
    except RuntimeError as error:
        raise SynthError(f"eSpeak NG data missing: {error}") from None


def _cache_dir() -> tuple[Path, Path]:
    import espeakng_loader  # see data_path

    lib = Path(espeakng_loader.get_library_path())
    if not lib.is_file():
        raise SynthError(f"eSpeak NG library not found: {lib}")
    h = hashlib.sha256(lib.read_bytes())
    h.update(str(data_path()).encode())
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return lib, Path(tempfile.gettempdir()) / f"kdpipe-espeak-{uid}-{h.hexdigest()[:16]}"


def private_library() -> str:
    """Path of the private copy of libespeak-ng (made on first use)."""
    lib, cache = _cache_dir()
    dst = cache / lib.name
    if not dst.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
        shutil.copyfile(lib, tmp)
        os.replace(tmp, dst)
    return str(dst)


def private_data() -> str:
    """Path of the private data folder (made on first use); the shipped one if that fails."""
    src = data_path()
    _, cache = _cache_dir()
    dst = cache / "espeak-ng-data"
    if dst.is_dir():
        return str(dst)
    tmp = cache / f"espeak-ng-data.{os.getpid()}.tmp"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "voices").mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name != "voices":
                (tmp / entry.name).symlink_to(entry)
        for entry in (src / "voices").iterdir():
            (tmp / "voices" / entry.name).symlink_to(entry)
        for accent in (src / "lang" / "gmw").glob("en*"):
            shutil.copyfile(accent, tmp / "voices" / accent.name.lower())
        os.rename(tmp, dst)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dst.is_dir():  # no symlinks here, or a race lost badly: use the shipped data
            return str(src)
    return str(dst)
