"""Which YAML documents are portside's: dispatch on apiVersion and kind, in a repo shared with others.

A GitOps repo holds Deployments, ServiceAccounts, kustomizations, Helm values and CI workflows
next to portside's documents. The rule, decided on the API group (the part of ``apiVersion``
before the ``/``):

- ``portside.io`` and ``metallb.io`` are ours: a document there must be right. A kind portside
  supports with a wrong version, or an unknown kind that nearly spells one we support
  (``IPAdressPool``), is an error with a did-you-mean. An unknown kind of portside's group is an
  error too (we know all of them). MetalLB's kinds portside does not implement (``BGPPeer``,
  ``BFDProfile``, ...) are skipped with a warning: people paste MetalLB's manifests as they are,
  and a BGP peering is not something portside can do or should refuse the repo over.
- A group that nearly spells one of ours (``portsde.io``, ``metalb.io``, ``portside.com``) is a
  typo: an error with a did-you-mean.
- Any other group is someone else's: the document is skipped and counted. So is a document with
  neither apiVersion nor kind (a Helm values file, a kustomization, a workflow): it is not a
  Kubernetes manifest. But one of our kinds without an apiVersion, our group without a kind, or a
  document with metadata and spec and no header at all is an error: that is a manifest of ours
  with a mistake, not someone else's file.

The common case (one of our exact apiVersion/kind pairs) costs one dict lookup; the rest runs only
for documents that are not ours.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.desired.models import KINDS, METALLB_API, PORTSIDE_API, Document

PORTSIDE_GROUP = PORTSIDE_API.partition("/")[0]
METALLB_GROUP = METALLB_API.partition("/")[0]
OUR_GROUPS = (PORTSIDE_GROUP, METALLB_GROUP)
SUPPORTED_KINDS = tuple(sorted({kind for _, kind in KINDS}))
# MetalLB's custom resources that portside does not implement: BGP mode, its tuning, and the
# status objects MetalLB writes itself.
METALLB_UNSUPPORTED = frozenset({
    "BGPPeer", "BGPAdvertisement", "BFDProfile", "Community", "ServiceL2Status", "ServiceBGPStatus",
    "ConfigurationState",
})
# How alike a kind without an apiVersion must be to a supported one to be taken for a
# misspelling of it: strict enough that a ServiceAccount is not a misspelt ServiceExposure. (In our
# own groups difflib's usual 0.6 applies: there, a kind we do not know is most likely a typo.)
_KIND_CUTOFF = 0.85

Skip = Literal["otherKinds", "notManifests", "unsupportedKinds"]
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Ours:
    """A document portside loads with ``model``."""

    model: type[Document]


@dataclass(frozen=True)
class Skipped:
    """A document that is not portside's; ``warning`` (at ``kind``) when the user should hear of it."""

    reason: Skip
    warning: str | None = None


@dataclass(frozen=True)
class Refused:
    """A document meant for portside with a mistake in its header; ``meant`` is the kind it
    probably is (for silencing follow-on errors about its name), None when unknown."""

    path: FieldPath
    message: str
    meant: str | None


Verdict = Ours | Skipped | Refused

_OURS: dict[tuple[object, object], Ours] = {key: Ours(model) for key, model in KINDS.items()}


def dispatch(document: Any) -> Verdict:
    """What to do with one (non-empty) YAML document."""
    if not isinstance(document, dict):
        return _not_a_mapping(document)
    api_version, kind = document.get("apiVersion"), document.get("kind")
    try:
        ours = _OURS.get((api_version, kind))  # the hot path: one lookup, nothing allocated
    except TypeError:  # a list or a mapping where a string belongs
        ours = None
    if ours is not None:
        return ours
    if not isinstance(kind, str) or not kind:
        kind = None
    if not isinstance(api_version, str) or not api_version:
        return _without_api_version(document, kind)
    group, version = split_api_version(api_version)
    if group in OUR_GROUPS:
        return _our_group(group, version, api_version, kind, "kind" in document)
    near = near_group(group)
    if near is not None:
        meant = _supported_kind(kind) if kind is not None else None
        return Refused(("apiVersion",), f'apiVersion "{api_version}": unknown API group "{group}"; '
                       f'did you mean "{_suggest_version(near, meant)}"?', meant)
    if kind in SUPPORTED_KINDS and "." not in group:
        # The core group ("v1") has no such kind: this is ours with the wrong apiVersion.
        return Refused(("apiVersion",), f'apiVersion "{api_version}" is not valid for kind {kind} '
                       f"(use {' or '.join(_versions(kind))})", kind)
    return Skipped("otherKinds")


def split_api_version(api_version: str) -> tuple[str, str]:
    """``portside.io/v1alpha1`` -> (``portside.io``, ``v1alpha1``); ``v1`` -> (``""``, ``v1``).

    Without a ``/``, a dotted value is taken for a group that lacks its version.
    """
    group, slash, version = api_version.partition("/")
    if slash:
        return group, version
    return (api_version, "") if "." in api_version else ("", api_version)


def near_group(group: str) -> str | None:
    """Our group that ``group`` nearly spells (one edit away, or the same first label), if any."""
    label = group.partition(".")[0]
    for ours in OUR_GROUPS:
        if group == ours:
            return None
        our_label = ours.partition(".")[0]
        if _edits(group, ours) <= 1 or (label and _edits(label, our_label) <= 1):
            return ours
    return None


def _our_group(group: str, version: str, api_version: str, kind: str | None, kind_written: bool) -> Verdict:
    if kind is None:
        where: FieldPath = ("kind",) if kind_written else ()
        return Refused(where, f"missing kind (one of: {', '.join(SUPPORTED_KINDS)})", None)
    if kind in SUPPORTED_KINDS:
        versions = _versions(kind)
        same_group = [v for v in versions if v.startswith(group + "/")]
        close = difflib.get_close_matches(api_version, same_group, n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close and version else ""
        return Refused(("apiVersion",), f'apiVersion "{api_version}" is not valid for kind {kind} '
                       f"(use {' or '.join(versions)}){hint}", kind)
    if group == METALLB_GROUP and kind in METALLB_UNSUPPORTED:
        return Skipped("unsupportedKinds", f'MetalLB kind {kind} is not supported by portside (it announces '
                       "addresses by ARP, as MetalLB's layer 2 mode does, and has no BGP); skipped")
    in_group = [k for k in SUPPORTED_KINDS if any(v.startswith(group + "/") for v in _versions(k))]
    close = difflib.get_close_matches(kind, in_group, n=1)
    if close or group == PORTSIDE_GROUP:
        hint = f'; did you mean "{close[0]}"?' if close else ""
        return Refused(("kind",), f'unknown kind "{kind}" (known: {", ".join(in_group)}){hint}',
                       close[0] if close else None)
    return Skipped("unsupportedKinds", f"kind {kind} of {group} is not one portside supports "
                   f"({', '.join(in_group)}); skipped")


def _without_api_version(document: dict[str, Any], kind: str | None) -> Verdict:
    where: FieldPath = ("apiVersion",) if "apiVersion" in document else ()
    got = "missing apiVersion" if document.get("apiVersion") in (None, "") else "apiVersion is not a string"
    if kind is None:
        if "apiVersion" in document or ("metadata" in document and "spec" in document):
            return Refused(where, f"{got} and kind: every manifest needs both", None)
        return Skipped("notManifests")
    meant = kind if kind in SUPPORTED_KINDS else _supported_kind(kind)
    if meant is None:
        return Skipped("otherKinds")
    hint = "" if meant == kind else f' (kind "{kind}": did you mean "{meant}"?)'
    return Refused(where, f"{got} for kind {meant} (use {' or '.join(_versions(meant))}){hint}", meant)


def _not_a_mapping(document: Any) -> Verdict:
    """A list or a scalar has no apiVersion: someone else's YAML, unless it holds our manifests."""
    items = document if isinstance(document, list) else []
    for item in items[:10]:
        if isinstance(item, dict) and isinstance(item.get("apiVersion"), str) \
                and split_api_version(item["apiVersion"])[0] in OUR_GROUPS:
            return Refused((), "a document must be a mapping with apiVersion and kind, got a list "
                           "(write one document per manifest, separated by ---)", None)
    return Skipped("notManifests")


def _supported_kind(kind: str) -> str | None:
    """The supported kind that ``kind`` misspells, if it is that close to one."""
    if kind in SUPPORTED_KINDS:
        return kind
    close = difflib.get_close_matches(kind, SUPPORTED_KINDS, n=1, cutoff=_KIND_CUTOFF)
    return close[0] if close else None


def _versions(kind: str) -> list[str]:
    return sorted(v for v, k in KINDS if k == kind)


def _suggest_version(group: str, kind: str | None) -> str:
    if kind is not None:
        for version in _versions(kind):
            if version.startswith(group + "/"):
                return version
    return PORTSIDE_API if group == PORTSIDE_GROUP else METALLB_API


def _edits(a: str, b: str) -> int:
    """Edit distance with transpositions (optimal string alignment); cheap for short names."""
    if abs(len(a) - len(b)) > 2:
        return 3
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            best = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, previous2[j - 2] + 1)
            current.append(best)
        previous2, previous = previous, current
    return previous[-1]
