"""Run folders: one run of one kind per folder, never replaced unasked.

A folder written by ``zoo train``, ``zoo eval`` or ``zoo demo`` holds a marker, ``.zoo-run.json``
(written atomically when the run starts), naming the kind of run, the model, the entries that were
in the folder before it started (``before``) and, once it finished, the entries it wrote
(``files``). From it:

* a command refuses a folder holding another kind of run (an evaluation into a training run's
  folder, a demo into an evaluation's), ``--overwrite`` or not;
* a folder holding a run of the same kind is refused unless ``--overwrite`` (or ``--resume``);
* ``--overwrite`` first removes what the old run wrote (the marker's ``files``, or for a run that
  never finished, what is there beyond ``before``) and the runs nested in it (a training run's
  ``eval/`` folder, a demo's model folders), and nothing else: a user's own files stay.

A folder written before markers existed is recognised by its files (``checkpoint.pt``,
``metrics.json`` or ``history.json``: a training run; ``report.json``: an evaluation, with
``index.md`` a demo), and ``--overwrite`` removes those files only.

A run holds the folder's OS file lock (released even when the process is killed) while it writes;
a second writer is refused. A run that fails before writing anything leaves the folder as it was.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from pyro_zoo.inference.checkpoint import remove_stale_temporaries, write_atomic

LOCK = ".zoo.lock"
MARKER = ".zoo-run.json"
CHECKPOINT = "checkpoint.pt"
#: what each kind of run is called in messages
KINDS = {"train": "a training run", "eval": "an evaluation report", "demo": "a demo report"}
#: the files that identify a folder written before markers existed, and that --overwrite removes there
UNMARKED = {"train": (CHECKPOINT, "metrics.json", "history.json"), "demo": ("report.json", "index.md"),
            "eval": ("report.json",)}


class RunFolderError(FileExistsError):
    """A run folder that is in use, or holds a run that would be replaced."""


def check_folder(folder, kind: str, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse a run of ``kind`` into ``folder`` when it holds another kind of run, or a run of this
    kind and neither ``resume`` nor ``overwrite`` is given."""
    folder = Path(folder)
    held = held_kind(folder)
    if held is not None and held != kind:
        raise RunFolderError(f"{folder} holds {KINDS[held]} of the zoo, not {KINDS[kind]}; choose another "
                             "--out")
    if held == kind and not (resume or overwrite):
        files = ", ".join(sorted(run_entries(folder))[:4])
        resumable = "--resume to continue it, " if kind == "train" else ""
        raise RunFolderError(f"{folder} already holds {KINDS[kind]} ({files}); pass {resumable}--overwrite "
                             "to replace it, or choose another --out")


def held_kind(folder: Path) -> str | None:
    """The kind of run ``folder`` holds (its marker's, or what its files say), or None."""
    marker = read_marker(folder)
    if marker is not None:
        return marker["kind"] if run_entries(folder) else None
    names = _names(folder)
    if names & set(UNMARKED["train"]):
        return "train"
    return next((kind for kind in ("demo", "eval") if set(UNMARKED[kind]) <= names), None)


def run_entries(folder: Path) -> set[str]:
    """The entries of ``folder`` that its run wrote (see the module docstring)."""
    marker = read_marker(folder)
    names = _names(folder)
    if marker is None:
        kind = held_kind(folder)
        return names & set(UNMARKED[kind]) if kind else set()
    if marker["files"] is not None:
        return names & set(marker["files"])
    return _new_entries(folder, marker)


def _new_entries(folder: Path, marker: dict) -> set[str]:
    """Every entry of ``folder`` that was not there before the marked run began."""
    return _names(folder) - set(marker["before"]) - {MARKER, LOCK}


def read_marker(folder: Path) -> dict | None:
    """``folder``'s marker, checked: a kind, plain entry names (no path can leave the folder)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
        names = [*marker["before"], *(marker["files"] or [])]
        valid = marker["kind"] in KINDS and all(_plain_name(name) for name in names)
    except (ValueError, KeyError, TypeError, OSError):
        valid = False
    if not valid:
        raise RunFolderError(f"{path} is damaged; delete it if {folder} holds no zoo run, or choose another "
                             "--out")
    return marker


def _plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def _real_folder(path: Path) -> bool:
    """A folder, not a link to one (a link is removed, never followed)."""
    return path.is_dir() and not path.is_symlink()


def _names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


def clear(folder: Path) -> None:
    """Remove what the run in ``folder`` wrote, and the runs nested in it (see the module docstring)."""
    nested = {path.name for path in folder.iterdir() if _real_folder(path) and (path / MARKER).is_file()}
    for name in sorted(run_entries(folder) | nested):
        path = folder / name
        if _real_folder(path):
            if name in nested:
                with _lock(path):
                    clear(path)
                (path / LOCK).unlink(missing_ok=True)
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink(missing_ok=True)
    (folder / MARKER).unlink(missing_ok=True)


@contextmanager
def run_folder(folder, kind: str, model: str | None = None, *, resume: bool = False,
               overwrite: bool = False):
    """Hold ``folder`` for a run of ``kind``: checked, locked, the old run removed (``overwrite``),
    marked; when the block ends the marker lists what the run wrote. A run that fails before
    writing anything leaves the folder as it was (a folder this call made is removed again)."""
    folder = Path(folder)
    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _lock(folder):
            check_folder(folder, kind, resume=resume, overwrite=overwrite)
            if overwrite:
                clear(folder)
            marker = _begin(folder, kind, model, resume)
            try:
                yield folder
            except BaseException:
                if not _new_entries(folder, marker):
                    (folder / MARKER).unlink(missing_ok=True)
                raise
            written = sorted(_new_entries(folder, marker))
            write_atomic(folder / MARKER, json.dumps({**marker, "files": written}))
    except BaseException:
        if made and _names(folder) <= {LOCK}:
            (folder / LOCK).unlink(missing_ok=True)
            for parent in made:
                parent.rmdir()
        raise


def _begin(folder: Path, kind: str, model: str | None, resume: bool) -> dict:
    """The marker of this run, written: a resumed run keeps its marker (``files`` reopened)."""
    marker = read_marker(folder)
    if resume and marker is not None:
        marker = {**marker, "files": None}
    else:
        before = _names(folder) - {MARKER, LOCK} - (set(UNMARKED[kind]) if resume else set())
        marker = {"kind": kind, "model": model, "before": sorted(before), "files": None}
    write_atomic(folder / MARKER, json.dumps(marker))
    return marker


@contextmanager
def _lock(folder: Path):
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderError(f"{folder} is being written by another zoo run ({holder}); wait for it "
                                 "to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        remove_stale_temporaries(folder)
        yield
