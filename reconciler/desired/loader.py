"""Load a desired-state repo: every ``*.yaml``/``*.yml`` below a path -> typed documents.

Hostile input is refused with a diagnostic and nothing else happens: files over 1 MiB, non-UTF-8
text, symlinks that leave the repo, anything that is not a regular file, YAML syntax errors,
unknown tags, duplicate keys, alias bombs, empty documents, unknown kinds, apiVersions and fields.
Every problem of every file is collected; nothing stops at the first one.

Directories and files whose name starts with a dot (``.git``, ``.github``, ``.portside``) are
not part of the desired state and are skipped: CI workflows are YAML too.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.common.errors import Diagnostic, UsageError
from reconciler.common.gcpause import gc_paused
from reconciler.desired.fielderrors import describe_value, explain
from reconciler.desired.models import KINDS, Document
from reconciler.desired.state import Origin
from reconciler.desired.yamlsource import (
    FieldPath,
    YamlDocument,
    format_path,
    offset_position,
    parse_path,
    parse_yaml,
)

MAX_FILE_BYTES = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
KNOWN_KINDS = sorted({kind for _, kind in KINDS})


@dataclass(frozen=True)
class LoadedDocument:
    """A typed document and where each of its fields was written."""

    model: Document
    file: str
    source: YamlDocument = field(repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def name(self) -> str:
        return self.model.metadata.name

    @property
    def origin(self) -> Origin:
        """Where the document starts (its first line)."""
        return self.origin_of(())

    def origin_of(self, path: FieldPath | str, key: bool = False) -> Origin:
        """Where the field at ``path`` (``spec.addresses[0]`` or a tuple) was written.

        Fields that were not written (defaults) resolve to their nearest written parent.
        With ``key=True``, point at the field's key rather than its value.
        """
        parts = parse_path(path) if isinstance(path, str) else path
        line, col = self.source.key_position(parts) if key else self.source.position(parts)
        return Origin(self.file, line, col)

    def diagnostic(self, path: FieldPath | str, message: str, key: bool = False) -> Diagnostic:
        """A problem with the field at ``path`` of this document."""
        where = self.origin_of(path, key)
        text_path = path if isinstance(path, str) else format_path(path)
        return Diagnostic(where.file, where.line, where.col, message, text_path)


@dataclass
class LoadResult:
    """The documents that loaded, and every problem found on the way."""

    documents: list[LoadedDocument] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: int = 0
    document_count: int = 0  # YAML documents seen, including those that failed
    # kind -> names of documents that failed to load: references to them are not "unknown" (that
    # error would only send the user looking in the wrong place).
    invalid_names: dict[str, set[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def repo_directory(root: Path) -> Path:
    """The directory that file names in documents and diagnostics are relative to."""
    return root if root.is_dir() else root.parent


def load_documents(root: Path) -> LoadResult:
    """Load every YAML file below ``root`` (or ``root`` itself when it is a file).

    File names in documents and diagnostics are relative to ``root``. Raises UsageError only
    when ``root`` itself does not exist; everything else is reported as diagnostics.
    """
    if not root.exists():
        raise UsageError(f"{root}: no such file or directory")
    result = LoadResult()
    if root.is_file():
        files: list[tuple[str, Path]] = [(root.name, root)]
        base = root.parent.resolve()
    else:
        base = root.resolve()
        files = list(_discover(base, result.diagnostics))
    with gc_paused():
        for rel, path in files:
            result.files += 1
            data = _read(rel, path, base, result.diagnostics)
            if data is not None:
                _load_file(rel, data, result)
    return result


def _discover(base: Path, diagnostics: list[Diagnostic]) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of every YAML file below ``base``, in a stable order."""
    seen: set[Path] = set()
    links: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)  # os.walk does not follow it; its target is walked if inside
                _check_link(here / name, base, diagnostics)
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                continue
            path = here / name
            rel = path.relative_to(base).as_posix()
            if path.is_symlink():
                links.append((rel, path))
            else:
                seen.add(path)
                yield rel, path
    for rel, path in links:
        target = _check_link(path, base, diagnostics)
        # A link to a file that is loaded anyway would declare every document twice.
        if target is not None and target not in seen:
            seen.add(target)
            yield rel, path


def _check_link(path: Path, base: Path, diagnostics: list[Diagnostic]) -> Path | None:
    rel = path.relative_to(base).as_posix()
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        diagnostics.append(Diagnostic(rel, 1, 1, f"broken symlink (points to {os.readlink(path)})"))
        return None
    if not target.is_relative_to(base):
        diagnostics.append(Diagnostic(rel, 1, 1, f"symlink leaves the repo (points to {target}); "
                                      "copy the file into the repo instead"))
        return None
    return target


def _read(rel: str, path: Path, base: Path, diagnostics: list[Diagnostic]) -> bytes | None:
    try:
        info = path.stat()
    except OSError as exc:
        diagnostics.append(Diagnostic(rel, 1, 1, f"cannot read: {exc.strerror}"))
        return None
    if not stat.S_ISREG(info.st_mode):
        diagnostics.append(Diagnostic(rel, 1, 1, "not a regular file (a device, socket or pipe); remove it"))
        return None
    if info.st_size > MAX_FILE_BYTES:
        diagnostics.append(Diagnostic(rel, 1, 1, f"file is {info.st_size} bytes, over the limit of 1 MiB "
                                      f"({MAX_FILE_BYTES} bytes); split it into smaller files"))
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        diagnostics.append(Diagnostic(rel, 1, 1, f"cannot read: {exc.strerror}"))
        return None
    if len(data) > MAX_FILE_BYTES:  # it grew after stat()
        diagnostics.append(Diagnostic(rel, 1, 1, "file is over the limit of 1 MiB; split it up"))
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = offset_position(data, exc.start)
        diagnostics.append(Diagnostic(rel, line, col, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                                      "save the file as UTF-8"))
        return None
    return data


def _load_file(rel: str, data: bytes, result: LoadResult) -> None:
    documents, diagnostics = parse_yaml(data, rel)
    result.diagnostics.extend(diagnostics)
    for doc in documents:
        result.document_count += 1
        loaded = _load_document(rel, doc, result.diagnostics, result.invalid_names)
        if loaded is not None:
            result.documents.append(loaded)


def _load_document(rel: str, doc: YamlDocument, diagnostics: list[Diagnostic],
                   invalid_names: dict[str, set[str]]) -> LoadedDocument | None:
    def problem(path: FieldPath, message: str, key: bool = False) -> None:
        if key and path and not doc.has_key(path):  # a missing field: point at its parent
            line, col = doc.key_position(path[:-1])
        else:
            line, col = doc.key_position(path) if key else doc.position(path)
        diagnostics.append(Diagnostic(rel, line, col, message, format_path(path)))

    value: Any = doc.value
    if value is None:
        diagnostics.append(Diagnostic(rel, doc.line, doc.col, "empty document: every document needs "
                                      "apiVersion and kind (remove the extra '---' if there is one)"))
        return None
    if not isinstance(value, dict):
        problem((), f"a document must be a mapping with apiVersion and kind, got {describe_value(value)}")
        return None
    api_version, kind = value.get("apiVersion"), value.get("kind")
    if not isinstance(kind, str) or not kind:
        problem(("kind",) if "kind" in value else (), f"missing kind (one of: {', '.join(KNOWN_KINDS)})")
        return None
    if kind not in KNOWN_KINDS:
        close = difflib.get_close_matches(kind, KNOWN_KINDS, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        problem(("kind",), f'unknown kind "{kind}" (known: {", ".join(KNOWN_KINDS)}){hint}')
        return None
    if not isinstance(api_version, str) or (api_version, kind) not in KINDS:
        versions = sorted(v for v, k in KINDS if k == kind)
        where: FieldPath = ("apiVersion",) if "apiVersion" in value else ()
        got = f'apiVersion "{api_version}"' if isinstance(api_version, str) else "missing apiVersion"
        problem(where, f"{got} is not valid for kind {kind} (use {' or '.join(versions)})")
        return None
    model = KINDS[(api_version, kind)]
    try:
        typed = model.model_validate(value, strict=True)
    except ValidationError as exc:
        for found in explain(exc.errors(), model, value):
            problem(found.path, found.message, key=found.at_key)
        name = (value.get("metadata") or {}).get("name") if isinstance(value.get("metadata"), dict) else None
        if isinstance(name, str):
            invalid_names.setdefault(kind, set()).add(name)
        return None
    return LoadedDocument(typed, rel, doc)
