"""Load a desired-state repo: every ``*.yaml``/``*.yml`` below a path -> typed documents.

Hostile input is refused with a diagnostic and nothing else happens: files over 1 MiB, non-UTF-8
text, symlinks that leave the repo, anything that is not a regular file, YAML syntax errors,
unknown tags, duplicate keys, alias bombs, unknown fields. Every problem of every file is
collected; nothing stops at the first one.

The repo may be shared with other manifests (:mod:`reconciler.desired.dispatch` decides which
documents are portside's): documents of other API groups and YAML that is not a manifest at all
are skipped and counted, empty documents are skipped as kubectl skips them, and paths matched by
``.portsideignore`` (gitignore syntax, at the top of the loaded directory) are not read, nor are
Helm charts (a directory holding ``Chart.yaml``: templates are YAML only once rendered).
Directories and files whose name starts with a dot (``.git``, ``.github``, ``.portside``) are
never part of the desired state: CI workflows are YAML too.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.common.errors import Diagnostic, UsageError
from reconciler.common.gcpause import gc_paused
from reconciler.desired.dispatch import Ours, Refused, Skip, Skipped, dispatch
from reconciler.desired.fielderrors import explain
from reconciler.desired.ignorefile import IGNORE_FILE, IgnoreRules
from reconciler.desired.models import Document
from reconciler.desired.state import Origin
from reconciler.desired.yamldoc import FieldPath, YamlDocument
from reconciler.desired.yamlsource import format_path, offset_position, parse_path, parse_yaml

MAX_FILE_BYTES = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
HELM_CHART = "Chart.yaml"
# Under invalid_names: the key of every Service a failed ServiceExposure names (a route to it
# is not "exposed by nothing"), and the names of failed documents whose kind cannot be told.
SERVICE_KEYS = "Service"
ANY_KIND = "*"


@dataclass(frozen=True, slots=True)
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
        return Origin(self.file, self.source.line, self.source.col)  # origin_of(()), for every document

    def origin_of(self, path: FieldPath | str, key: bool = False) -> Origin:
        """Where the field at ``path`` (``spec.addresses[0]`` or a tuple) was written.

        Fields that were not written (defaults) resolve to their nearest written parent.
        With ``key=True``, point at the field's key rather than its value.
        """
        parts = parse_path(path) if isinstance(path, str) else path
        line, col = self.source.key_position(parts) if key else self.source.position(parts)
        return Origin(self.file, line, col)

    def diagnostic(self, path: FieldPath | str, message: str, key: bool = False,
                   related: tuple[Origin, ...] = ()) -> Diagnostic:
        """A problem with the field at ``path`` of this document; ``related``: the other places
        ``message`` names (they get the same base directory as this one when shown)."""
        where = self.origin_of(path, key)
        text_path = path if isinstance(path, str) else format_path(path)
        return Diagnostic(where.file, where.line, where.col, message, text_path,
                          tuple((o.file, o.line, o.col) for o in related))


@dataclass
class LoadResult:
    """The documents that loaded, and every problem found on the way."""

    documents: list[LoadedDocument] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)  # shown, but the repo is still valid
    files: int = 0
    document_count: int = 0  # portside's documents seen, including those that failed
    skipped: Counter[Skip] = field(default_factory=Counter)  # documents that are not portside's
    empty: int = 0  # empty documents (a trailing ---, a comment-only document)
    ignored: int = 0  # paths left out by .portsideignore
    helm_charts: int = 0  # directories holding a Chart.yaml, left out whole
    # kind -> names of documents that failed to load: references to them are not "unknown" (that
    # error would only send the user looking in the wrong place). See SERVICE_KEYS and ANY_KIND.
    invalid_names: dict[str, set[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def skipped_summary(self) -> str | None:
        """A line such as "12 documents of other kinds skipped"; None when nothing was left out."""
        other = self.skipped["otherKinds"] + self.skipped["notManifests"]
        parts = []
        if other:
            parts.append(f"{other} document{'s' if other != 1 else ''} of other kinds")
        unsupported = self.skipped["unsupportedKinds"]
        if unsupported:
            noun = "" if other else (" documents" if unsupported != 1 else " document")
            parts.append(f"{unsupported}{noun} of unsupported MetalLB kinds")
        text = " and ".join(parts) + " skipped" if parts else ""
        notes = [text] if text else []
        if self.helm_charts:
            notes.append(f"{self.helm_charts} Helm chart{'s' if self.helm_charts != 1 else ''} skipped")
        if self.ignored:
            notes.append(f"{self.ignored} path{'s' if self.ignored != 1 else ''} ignored ({IGNORE_FILE})")
        return "; ".join(notes) or None


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
        rules = _ignore_rules(base, result.diagnostics)
        files = list(_discover(base, rules, result))
    with gc_paused():
        for rel, path in files:
            result.files += 1
            data = _read(rel, path, base, result.diagnostics)
            if data is not None:
                _load_file(rel, data, result)
    return result


def _ignore_rules(base: Path, diagnostics: list[Diagnostic]) -> IgnoreRules:
    path = base / IGNORE_FILE
    if not path.exists() and not path.is_symlink():
        return IgnoreRules()
    if path.is_symlink() and _check_link(path, base, diagnostics) is None:
        return IgnoreRules()
    data = _read(IGNORE_FILE, path, base, diagnostics)
    return IgnoreRules.parse(data.decode("utf-8-sig")) if data is not None else IgnoreRules()


def _discover(base: Path, rules: IgnoreRules, result: LoadResult) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of every YAML file below ``base``, in a stable order."""
    diagnostics = result.diagnostics
    seen: set[Path] = set()
    links: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        prefix = "" if here == base else here.relative_to(base).as_posix() + "/"
        if prefix and HELM_CHART in filenames:
            # A Helm chart: its templates are not manifests until Helm renders them.
            result.helm_charts += 1
            dirnames[:] = []
            continue
        kept = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            if rules.patterns and rules.ignores(prefix + name, True):
                result.ignored += 1  # not entered: nothing below it can be re-included (as in git)
                continue
            if (here / name).is_symlink():
                # os.walk does not follow it; its target is walked if inside
                _check_link(here / name, base, diagnostics)
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                continue
            rel = prefix + name
            if rules.patterns and rules.ignores(rel, False):
                result.ignored += 1
                continue
            path = here / name
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
        loaded = _load_document(rel, doc, result)
        if loaded is not None:
            result.documents.append(loaded)


def _load_document(rel: str, doc: YamlDocument, result: LoadResult) -> LoadedDocument | None:
    value: Any = doc.value
    if value is None:  # "---" at the end, "---" twice, a document of comments: kubectl skips them
        result.empty += 1
        return None
    verdict = dispatch(value)
    if type(verdict) is Ours:  # the common case first: one of our documents
        result.document_count += 1
        model = verdict.model
        try:
            # model_validate(value, strict=True) without its wrapper: a microsecond per document
            typed = model.__pydantic_validator__.validate_python(value, strict=True)
        except ValidationError as exc:
            for found in explain(exc.errors(), model, value):
                _problem(rel, doc, result, found.path, found.message, key=found.at_key)
            _remember_failed(result.invalid_names, value["kind"], value)
            return None
        return LoadedDocument(typed, rel, doc)
    if isinstance(verdict, Skipped):
        result.skipped[verdict.reason] += 1
        if verdict.warning is not None:
            line, col = doc.position(("kind",))
            result.warnings.append(Diagnostic(rel, line, col, verdict.warning, "kind"))
        return None
    assert isinstance(verdict, Refused)
    result.document_count += 1
    _problem(rel, doc, result, verdict.path, verdict.message)
    _remember_failed(result.invalid_names, verdict.meant or ANY_KIND, value)
    return None


def _problem(rel: str, doc: YamlDocument, result: LoadResult, path: FieldPath, message: str,
             key: bool = False) -> None:
    if key and path and not doc.has_key(path):  # a missing field: point at its parent
        line, col = doc.key_position(path[:-1])
    else:
        line, col = doc.key_position(path) if key else doc.position(path)
    result.diagnostics.append(Diagnostic(rel, line, col, message, format_path(path)))


def _remember_failed(invalid_names: dict[str, set[str]], kind: str, value: Any) -> None:
    """Note what a failed document declares, so nothing else is reported as unknown because of it."""
    if not isinstance(value, dict):
        return
    metadata = value.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str):
        invalid_names.setdefault(kind, set()).add(name)
    spec = value.get("spec")
    service = spec.get("service") if isinstance(spec, dict) and kind == "ServiceExposure" else None
    if isinstance(service, dict) and isinstance(service.get("name"), str):
        namespace = service.get("namespace")
        namespace = namespace if isinstance(namespace, str) else "default"  # ServiceRef's default
        invalid_names.setdefault(SERVICE_KEYS, set()).add(f"{namespace}/{service['name']}")
