"""The loader: YAML -> plain values with positions -> typed documents, and the repo walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.common.errors import UsageError
from reconciler.desired import yamllib, yamlsource
from reconciler.desired.loader import load_documents
from reconciler.desired.models import IPAddressPool, L2Advertisement
from reconciler.desired.state import Origin
from reconciler.desired.yamlsource import format_path, parse_path, parse_yaml

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: {name}
  namespace: metallb-system
spec:
  addresses:
  - {cidr}
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def messages(root: Path) -> list[str]:
    return [str(d) for d in sorted(load_documents(root).diagnostics)]


# --- YAML values and positions -----------------------------------------------------------------


def test_values_follow_the_yaml_1_2_core_schema() -> None:
    text = (b"a: yes\nb: on\nc: true\nd: 0o17\ne: 0x1F\nf: 017\ng: 1e3\nh: ~\ni:\nj: '80'\n"
            b"k: !!str 80\nl: .inf\nm: 2024-01-01\nn: -5\no: 1.5\n")
    [doc], problems = parse_yaml(text, "f.yaml")
    assert problems == []
    assert doc.value == {"a": "yes", "b": "on", "c": True, "d": 15, "e": 31, "f": 17, "g": 1000.0, "h": None,
                         "i": None, "j": "80", "k": "80", "l": float("inf"), "m": "2024-01-01", "n": -5,
                         "o": 1.5}


@pytest.mark.parametrize("text", [".iNf", "-.inF", ".Nan", "+.nan", "0x 1F", "0x0x1", "0x1_F", "0o1_7", "0o", "0x",
                                  "0o8", "0xG", "0x\u0661"])
def test_numbers_the_core_schema_does_not_spell_stay_strings(text: str) -> None:
    # Python's int() and str.lower() accept more than the YAML 1.2 core schema's expressions.
    [doc], problems = parse_yaml(f"a: {text}\n".encode(), "f.yaml")
    assert problems == []
    assert doc.value == {"a": text}


@pytest.mark.parametrize(("text", "value"), [(".Inf", float("inf")), ("-.INF", float("-inf")), ("+.inf", float("inf")),
                                             ("0o777", 511), ("0xfF", 255)])
def test_numbers_the_core_schema_spells(text: str, value: float) -> None:
    [doc], _ = parse_yaml(f"a: {text}\n".encode(), "f.yaml")
    assert doc.value == {"a": value} and type(doc.value["a"]) is type(value)


def test_every_field_has_its_line_and_column() -> None:
    text = b"# comment\nspec:\n  addresses:\n  - 10.0.0.0/24\n  - 10.1.0.0/24\n  sel: {a: [x, y]}\n"
    [doc], _ = parse_yaml(text, "f.yaml")
    assert doc.position(("spec", "addresses", 1)) == (5, 5)
    assert doc.position(("spec", "sel", "a", 1)) == (6, 16)
    assert doc.key_position(("spec", "addresses")) == (3, 3)
    # A field that was not written resolves to its nearest written parent.
    assert doc.position(("spec", "sel", "missing", 3)) == doc.position(("spec", "sel"))


def test_multi_document_files_keep_real_line_numbers() -> None:
    text = b"a: 1\n---\nb: 2\n---\n# only a comment\nc: 3\n"
    docs, _ = parse_yaml(text, "f.yaml")
    assert [d.value for d in docs] == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert [d.position(()) for d in docs] == [(1, 1), (3, 1), (6, 1)]


def test_every_duplicate_key_is_reported_and_the_first_wins() -> None:
    text = b"a: 1\nb:\n  x: 1\n  x: 2\na: 3\n"
    [doc], problems = parse_yaml(text, "f.yaml")
    assert doc.value == {"a": 1, "b": {"x": 1}}
    assert [(p.line, p.col, p.path) for p in problems] == [(4, 3, "b.x"), (5, 1, "a")]


def test_anchors_and_aliases_within_budget_are_fine() -> None:
    text = b"sel: &s {matchLabels: {zone: a}}\nnodes: [*s, *s]\n"
    [doc], problems = parse_yaml(text, "f.yaml")
    assert problems == []
    assert doc.value["nodes"] == [{"matchLabels": {"zone": "a"}}] * 2
    # A field inside an alias is found where the anchor wrote it; the alias itself where it stands.
    assert doc.position(("nodes", 1, "matchLabels", "zone")) == (1, 30)
    assert doc.position(("nodes", 1)) == (2, 13)


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_quickly() -> None:
    levels = ["a: &a [" + ", ".join(["lol"] * 10) + "]"]
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    docs, problems = parse_yaml("\n".join(levels).encode(), "bomb.yaml")
    assert docs == []
    assert "aliases expand to more than" in problems[0].message


@pytest.mark.parametrize(("text", "phrase"), [
    (b"a: &a [*a]\n", "refers to no anchor defined before it"),
    (b"a: *nowhere\n", "refers to no anchor defined before it"),
    (b"base: &b {x: 1}\nother:\n  <<: *b\n", "merge keys (<<) are not supported"),
    (b"? [a, b]\n: c\n", "a mapping key must be a plain string"),
    (b"a: !!binary aGVsbG8=\n", "tag !!binary is not allowed"),
    (b"a: !!int abc\n", "'abc' is not a valid int"),
    (b"a: \"\x07\"\n", "unacceptable character"),
])
def test_unsafe_or_unsupported_yaml_is_refused(text: bytes, phrase: str) -> None:
    _, problems = parse_yaml(text, "f.yaml")
    assert any(phrase in p.message for p in problems), problems


def _every_source(monkeypatch: pytest.MonkeyPatch, text: bytes) -> list[tuple[list[object], list[str]]]:
    """parse_yaml's answer from the fast path (when the text is in its subset), libyaml's
    composer, from libyaml's events and from PyYAML's pure-Python parser: documents as (value,
    positions of every field) and messages."""
    def answer() -> tuple[list[object], list[str]]:
        docs, problems = parse_yaml(text, "f.yaml")
        return [(d.value, [(p, d.position(p), d.key_position(p)) for p in _paths(d.value)]) for d in docs], \
            [str(p) for p in problems]
    answers = [answer()]
    with monkeypatch.context() as patch:
        patch.setattr(yamlsource, "fast_documents", lambda data: None)
        answers.append(answer())
        patch.setattr(yamllib, "_CComposer", None)
        answers.append(answer())
        patch.setattr(yamllib, "CParser", None)
        answers.append(answer())
    return answers


def _paths(value: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@pytest.mark.parametrize("tag", ["!!str ", ""])  # with a tag, the fast path declines the file
def test_every_source_of_nodes_gives_the_same_result(monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    text = (POOL.format(name="a", cidr="10.0.0.0/24") + "---\n" + f"x: [1, '2', {tag}3, yes, 0777]\n"
            "y: {a: b, c: [d, {e: f}]}\n---\n").encode()
    fast, composer, events, pure = _every_source(monkeypatch, text)
    assert fast == composer == events == pure
    assert len(composer[0]) == 3 and composer[0][2][0] is None  # the empty document is kept (None)


def test_anchors_are_composed_from_events_with_the_alias_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    # libyaml's composer refuses a redefined anchor and forgets where an alias stands.
    text = b"a: &x 1\nb: &x [2, {c: 3}]\nd: *x\nbad: !!int no\n"
    fast, composer, events, pure = _every_source(monkeypatch, text)
    assert fast == composer == events == pure
    [doc], problems = parse_yaml(text, "f.yaml")
    assert doc.value["d"] == [2, {"c": 3}]
    assert doc.position(("d",)) == (3, 4)
    assert doc.position(("d", 1, "c")) == (2, 15)
    assert [str(p) for p in problems] == ["f.yaml:4:6: bad: 'no' is not a valid int"]


@pytest.mark.parametrize(("text", "deep"), [
    (b"[\n" * 3000 + b"---\n" + b"[\n" * 3000, False),  # two documents
    (b"[\n" * 3000 + b"----,\n" + b"[\n" * 3000, True),  # "----" is text: one document
    (b"[\n" * 3000 + b"\r---\r\n" + b"[\n" * 3000, True),  # a "---" after a \r: counted as one
    (b"a: [" + b"x" * 3000 + b"]\n", True),  # a long line may hide block nesting
    (b"---\n".join([b"a: {b: [1, 2]}\n"] * 5000), False),
])
def test_nesting_libyamls_composer_could_not_survive_is_foreseen(text: bytes, deep: bool) -> None:
    assert yamllib._may_nest_deep(text) is deep


@pytest.mark.parametrize(("text", "anchored"), [
    (b"a: &x 1\n", True), (b"- &x 1\n", True), (b"[1,&x 2]\n", True), (b'{"a":&x 1}\n', True),
    (b"\xef\xbb\xbf&x a: 1\n", True), (b"a:\t&x 1\n", True), (b"a: 1\xc2\x85&x b\n", True),
    (b"url: https://example.com/?a=1&b=2\n", False), (b"a: b&c\n", False),
])
def test_only_files_that_may_hold_anchors_leave_libyamls_composer(text: bytes, anchored: bool) -> None:
    # The composer expands aliases itself: no limit on their expansion, no position of their own.
    assert yamllib._may_hold_anchors(text) is anchored


@pytest.mark.timeout(30)
def test_nesting_too_deep_for_libyamls_composer_is_refused_without_a_crash() -> None:
    # libyaml's composer recurses in C: 200,000 levels crash the whole process.
    for text in (b"[" * 200_000 + b"]" * 200_000, b"a: " + b"{x: " * 100_000 + b"}" * 100_000):
        docs, problems = parse_yaml(text, "deep.yaml")
        assert docs == []
        assert [(p.line, p.message) for p in problems] == [(1, "mappings and lists nest deeper than 64 levels; "
                                                               "refusing")]


@pytest.mark.parametrize(("text", "expected"), [
    # the first problem in the file wins, even when the composer would only see the later one
    (b"a: !foo 1\nb: [1, 2\n", "f.yaml:1:4: tag !foo is not allowed"),
    (b"a: {[x, y\n", "f.yaml:1:5: a: a mapping key must be a plain string, not a mapping or a list"),
    (b"a: 1\nb: !!binary x\nc", "f.yaml:2:4: tag !!binary is not allowed"),
    (b"a: !!int x\n---\nb: [\n", "f.yaml:4:1: YAML syntax error"),
    (b"a: " + b"[" * 70 + b"\n", "f.yaml:1:67: mappings and lists nest deeper than 64 levels"),
])
def test_the_first_problem_of_a_broken_file_is_reported(monkeypatch: pytest.MonkeyPatch, text: bytes,
                                                        expected: str) -> None:
    for _, problems in _every_source(monkeypatch, text):
        assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_positions_are_plain_ints_in_one_array() -> None:
    [doc], _ = parse_yaml(POOL.format(name="a", cidr="10.0.0.0/24").encode(), "f.yaml")
    assert doc.marks.typecode == "q"
    # 5 entries at the top, 2 in metadata, 1 in spec, 1 address: 3 slots per entry, 2 per item
    assert len(doc.marks) == 3 * (4 + 2 + 1) + 2


def test_parse_path_round_trips() -> None:
    assert parse_path("spec.addresses[0]") == ("spec", "addresses", 0)
    assert parse_path("spec.matrix[1][2].x") == ("spec", "matrix", 1, 2, "x")
    assert parse_path("") == ()
    path = ("spec", "nodeSelectors", 0, "matchLabels", "kubernetes.io/hostname")
    assert format_path(path) == 'spec.nodeSelectors[0].matchLabels["kubernetes.io/hostname"]'
    assert parse_path(format_path(path)) == path
    assert parse_path(format_path(("a", "", 'q"uote', "80"))) == ("a", "", 'q"uote', "80")


def test_keys_with_dots_have_their_own_positions() -> None:
    text = b"labels:\n  a.b: 1\n  a: {b: 2}\n"
    [doc], _ = parse_yaml(text, "f.yaml")
    assert doc.position(("labels", "a.b")) == (2, 8)
    assert doc.position(("labels", "a", "b")) == (3, 10)


# --- typed documents ---------------------------------------------------------------------------


def test_metallb_manifests_load_as_they_are(tmp_path: Path) -> None:
    """Examples as MetalLB's documentation writes them, including IPv6 and selectors."""
    write(tmp_path, "metallb.yaml", """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
spec:
  addresses:
  - 192.168.10.0/24
  - 192.168.9.1-192.168.9.5
  - fc00:f853:0ccd:e799::/124
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces:
      - namespace-a
    namespaceSelectors:
      - matchLabels:
          foo: bar
    serviceSelectors:
      - matchExpressions:
          - {key: app, operator: In, values: [bar]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
  interfaces:
  - eth3
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: NodeA
""")
    result = load_documents(tmp_path)
    assert result.diagnostics == []
    pool, ad = (d.model for d in result.documents)
    assert isinstance(pool, IPAddressPool) and isinstance(ad, L2Advertisement)
    assert pool.spec.autoAssign is False and pool.spec.serviceAllocation is not None
    assert pool.spec.serviceAllocation.priority == 50
    assert ad.spec.nodeSelectors[0].matchLabels == {"kubernetes.io/hostname": "NodeA"}


def test_origin_of_a_field(tmp_path: Path) -> None:
    write(tmp_path, "pools/lan.yaml", "# LAN\n" + POOL.format(name="lan", cidr="10.0.0.0/24"))
    [doc] = load_documents(tmp_path).documents
    assert doc.file == "pools/lan.yaml"
    assert doc.origin == Origin("pools/lan.yaml", 2, 1)
    assert doc.origin_of("spec.addresses[0]") == Origin("pools/lan.yaml", 9, 5)
    assert doc.origin_of(("spec", "autoAssign")) == doc.origin_of("spec")  # a default: its parent
    assert doc.origin_of("spec", key=True) == Origin("pools/lan.yaml", 7, 1)


def test_errors_of_all_files_are_collected(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "kind: [\n")
    write(tmp_path, "b.yaml", POOL.format(name="ok", cidr="10.0.0.0/24"))
    write(tmp_path, "c.yaml", POOL.format(name="Bad_Name", cidr="10.1.0.0/24") + "  autoAssign: yes\n")
    result = load_documents(tmp_path)
    assert [d.name for d in result.documents] == ["ok"]
    assert [(d.file, d.line, d.col) for d in sorted(result.diagnostics)] == [
        ("a.yaml", 2, 1), ("c.yaml", 4, 9), ("c.yaml", 9, 15)]
    assert "write true or false" in sorted(result.diagnostics)[-1].message
    assert result.files == 3 and result.document_count == 2


def test_union_fields_get_one_message(tmp_path: Path) -> None:
    write(tmp_path, "t.yaml", """\
apiVersion: portside.io/v1alpha1
kind: Tunnel
metadata: {name: home}
spec:
  mode: local
  tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef
  originRequest: {connectTimeout: [1]}
""")
    [problem] = load_documents(tmp_path).diagnostics
    assert (problem.line, problem.col, problem.path) == (7, 35, "spec.originRequest.connectTimeout")
    assert "expected a duration" in problem.message and "got a list" in problem.message


# --- the repo walk -----------------------------------------------------------------------------


def test_walk_takes_yaml_anywhere_and_skips_dot_directories(tmp_path: Path) -> None:
    write(tmp_path, "a/b/c/deep.yml", POOL.format(name="deep", cidr="10.0.0.0/24"))
    write(tmp_path, "top.yaml", POOL.format(name="top", cidr="10.1.0.0/24"))
    write(tmp_path, ".github/workflows/ci.yaml", "on: push\njobs: {}\n")
    write(tmp_path, ".hidden.yaml", "not: portside\n")
    write(tmp_path, "README.md", "# not yaml\n")
    write(tmp_path, "values.json", "{}")
    result = load_documents(tmp_path)
    assert result.diagnostics == []
    assert sorted(d.file for d in result.documents) == ["a/b/c/deep.yml", "top.yaml"]


def test_a_single_file_can_be_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "pool.yaml", POOL.format(name="lan", cidr="10.0.0.0/24"))
    result = load_documents(path)
    assert [d.file for d in result.documents] == ["pool.yaml"]


def test_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_documents(tmp_path / "nope")


def test_symlinks_inside_the_repo_load_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, "pools/lan.yaml", POOL.format(name="lan", cidr="10.0.0.0/24"))
    write(repo, "data/wan.txt", POOL.format(name="wan", cidr="10.1.0.0/24"))
    (repo / "alias.yaml").symlink_to(repo / "pools" / "lan.yaml")  # a second name for a loaded file
    (repo / "wan.yaml").symlink_to(Path("data") / "wan.txt")  # the only way wan.txt is loaded
    (repo / "again").symlink_to(repo / "pools", target_is_directory=True)
    result = load_documents(repo)
    assert result.diagnostics == []
    assert sorted((d.file, d.name) for d in result.documents) == [("pools/lan.yaml", "lan"), ("wan.yaml", "wan")]


def test_symlinks_leaving_the_repo_or_dangling_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    write(tmp_path, "elsewhere/secret.yaml", "token: hunter2\n")
    (repo / "dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (repo / "dangling.yaml").symlink_to(repo / "gone.yaml")
    found = messages(repo)
    assert found[0].startswith("dangling.yaml:1:1: broken symlink")
    assert found[1].startswith("dir:1:1: symlink leaves the repo")
    assert "hunter2" not in "".join(found)


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    assert messages(tmp_path) == ["pipe.yaml:1:1: not a regular file (a device, socket or pipe); remove it"]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + POOL.format(name="lan", cidr="10.0.0.0/24").encode())
    result = load_documents(tmp_path)
    assert result.diagnostics == [] and [d.name for d in result.documents] == ["lan"]


def test_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    body = POOL.format(name="lan", cidr="10.0.0.0/24")
    padding = 1024 * 1024 - len(body) - 1
    (tmp_path / "big.yaml").write_text(body + "#" * padding + "\n")
    assert (tmp_path / "big.yaml").stat().st_size == 1024 * 1024
    assert load_documents(tmp_path).diagnostics == []
