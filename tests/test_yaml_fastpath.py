"""The fast path for everyday YAML gives exactly what libyaml's path gives, or declines the file.

A differential test: every YAML file of the project, the bench repos at small sizes, thousands of
seeded random documents of the fast path's subset, and seeded random mutations of all of them
(the characters YAML is made of inserted, deleted or replaced; lines re-indented) are read by
both paths. Where the fast path does not decline, the documents must be equal: values with
their types (``True`` is not ``1``), every position (the marks and blocks, and every field's
position looked up through them, which for documents of a compiled shape walks the shape's
skeleton), and no diagnostic from libyaml's path (whatever it would report, the fast path must
have declined). Breaking the fast path on purpose (a column off by one for a list item or a
null, "?" allowed to start a plain scalar, a wrong escape, no indentation check, a shifted block
number) makes these tests fail.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from bench.scale_repo import ScaleRepo
from reconciler.desired.yamldoc import YamlDocument
from reconciler.desired.yamlfast import fast_documents
from reconciler.desired.yamllib import parse_yaml_with_libyaml
from reconciler.desired.yamlsource import parse_yaml

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261201


def _typed(value: Any) -> Any:
    """``value`` with the type of every scalar spelled out, in the order of its keys."""
    if type(value) is dict:
        return ("map", [(key, _typed(item)) for key, item in value.items()])
    if type(value) is list:
        return ("seq", [_typed(item) for item in value])
    return (type(value).__name__, repr(value))


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if type(value) is dict:
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif type(value) is list:
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _signature(doc: YamlDocument) -> tuple[Any, ...]:
    """Everything a document says, positions looked up through its marks included."""
    looked_up = [(doc.position(path), doc.key_position(path), doc.has_key(path)) for path in _paths(doc.value)]
    return _typed(doc.value), doc.line, doc.col, doc.absolute_marks().tolist(), doc.block, looked_up


class _Tally:
    def __init__(self) -> None:
        self.taken = 0
        self.declined = 0


def _agree(data: bytes, tally: _Tally) -> None:
    fast = fast_documents(data)
    if fast is None:
        tally.declined += 1
        return
    tally.taken += 1
    full, problems = parse_yaml_with_libyaml(data, "f.yaml")
    assert not problems, (data, problems)
    assert [_signature(d) for d in fast] == [_signature(d) for d in full], data


# --- a generator of documents in the subset --------------------------------------------------

PLAIN = ["a", "name", "svc-00042", "x.y/z", "10.0.0.0/23", "fd00::1/128", "http://h.example:8080/p?a=1&b=2",
         "a#b", "two words", "three  spaced words", "é", "日本語", "🙂 smile", "-x", "--", ".5", "1", "-1", "+7",
         "0777", "0o17", "0x1F", "0x", "1e3", "1.5", "-2.5e-3", "+.inf", "-.Inf", ".NaN", ".nan", "true", "False",
         "TRUE", "yes", "no", "on", "off", "null", "~", "Null", "NULL", "a:b", "a?b", "a,b", "a]b", "a}b",
         "x!y", "x&y", "x*y", "x|y", "x>y", "x'y", 'x"y', "x%y", "x@y", "x`y", "12:30", "2026-12-01", "v1.2.3",
         "a - b", "a -b", "x -- y", "tail-"]
KEYS = ["apiVersion", "kind", "metadata", "name", "spec", "a", "b-c", "d.e/f", "k_1", "1", "true", "null",
        "x y", "é", "日本", "a[0]", "a,b", "a:b", "a#b", "-k"]
ESCAPES = ["\\n", "\\t", '\\"', "\\\\", "\\/", "\\u00e9", "\\x41", "\\U0001F600", "\\e", "\\0", "\\ ", "\\N", "\\_",
           "\\a", "\\b", "\\v", "\\f", "\\r", "\\L", "\\P"]


class _Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def scalar(self, flow: bool = False) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            text = rng.choice(PLAIN)
            if flow and any(c in text for c in ",[]{}#"):
                text = "z"
            return text
        if roll < 0.8:
            return "'" + rng.choice(PLAIN).replace("'", "''") + rng.choice(["", "''", " ", "#x"]) + "'"
        body = rng.choice(PLAIN).replace("\\", "").replace('"', "") + "".join(
            rng.choice(ESCAPES) for _ in range(rng.randint(0, 2)))
        return f'"{body}"'

    def key(self) -> str:
        rng = self.rng
        key = rng.choice(KEYS)
        if rng.random() < 0.1:
            return f"'{key}'" if rng.random() < 0.5 else f'"{key}"'
        return key

    def flow(self, depth: int = 0) -> str:
        rng = self.rng
        space = rng.choice(["", " ", "  "])
        count = rng.choice([0, 1, 2, 3])
        if rng.random() < 0.5:
            items = [self.flow(depth + 1) if depth < 2 and rng.random() < 0.2 else self.scalar(flow=True)
                     for _ in range(count)]
            return "[" + space + ("," + rng.choice([" ", "  ", ""])).join(items) + space + "]"
        keys = list(dict.fromkeys(rng.choice(["a", "b", "name", "port", "x y", "'q'", '"d"']) for _ in range(count)))
        items = [f"{key}: {self.flow(depth + 1) if depth < 2 and rng.random() < 0.2 else self.scalar(flow=True)}"
                 for key in keys]
        return "{" + space + ", ".join(items) + space + "}"

    def comment(self) -> str:
        return self.rng.choice(["", "", "", " # c", "  #: x # y", " #"])

    def lines_of_mapping(self, indent: int, depth: int) -> list[str]:
        rng = self.rng
        out: list[str] = []
        keys = list(dict.fromkeys(self.key() for _ in range(rng.randint(1, 4))))
        for key in keys:
            out += self.entry(" " * indent + key + ":", indent, depth)
        return out

    def entry(self, head: str, indent: int, depth: int) -> list[str]:
        """A key (``head`` ends with ":") and its value."""
        rng = self.rng
        roll = rng.random()
        if depth >= 4 or roll < 0.45:
            return [head + rng.choice([" ", "  "]) + self.scalar() + self.comment()]
        if roll < 0.55:
            return [head + rng.choice(["", " ", " # empty"])]
        if roll < 0.65:
            return [head + " " + self.flow() + self.comment()]
        if roll < 0.82:
            return [head + self.comment(), *self.lines_of_mapping(indent + rng.randint(1, 4), depth + 1)]
        inner = indent if rng.random() < 0.5 else indent + rng.randint(1, 3)
        return [head + self.comment(), *self.lines_of_list(inner, depth + 1)]

    def lines_of_list(self, indent: int, depth: int) -> list[str]:
        rng = self.rng
        out: list[str] = []
        dash = " " * indent + "-"
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if depth >= 4 or roll < 0.35:
                out.append(dash + " " + self.scalar() + self.comment())
            elif roll < 0.45:
                out.append(dash + rng.choice(["", " ", " # empty"]))
            elif roll < 0.55:
                out.append(dash + " " + self.flow())
            elif roll < 0.85:  # "- key: value" and the rest of that mapping below it
                gap = rng.choice([1, 1, 1, 3])
                inner = self.lines_of_mapping(indent + 1 + gap, depth + 1)
                out.append(dash + " " * gap + inner[0].lstrip(" "))
                out += inner[1:]
            else:
                nested = (self.lines_of_mapping if rng.random() < 0.5 else self.lines_of_list)(
                    indent + rng.randint(1, 3), depth + 1)
                out += [dash, *nested]
        return out

    def document(self) -> list[str]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.75:
            lines = self.lines_of_mapping(rng.choice([0, 0, 0, 2]), 0)
        elif roll < 0.9:
            lines = self.lines_of_list(rng.choice([0, 0, 1]), 0)
        elif roll < 0.95:
            lines = [rng.choice(["", " "]) + (self.flow() if rng.random() < 0.5 else self.scalar())]
        else:
            lines = []
        out = []
        for line in lines:  # comments and blank lines anywhere
            if rng.random() < 0.08:
                out.append(" " * rng.randint(0, 6) + rng.choice(["# note", "#", "", "   "]))
            out.append(line)
        return out

    def file(self) -> str:
        rng = self.rng
        if rng.random() < 0.15:  # one layout again and again (digits changed): compiled shapes
            lines = self.document()
            digits = "0123456789"
            copies = ["\n".join(["---", *lines]).translate(str.maketrans(digits, digits[k:] + digits[:k]))
                      for k in range(rng.randint(3, 5))]
            return "\n".join(copies) + rng.choice(["\n", "", "\n\n"])
        parts = []
        for index in range(rng.choice([1, 1, 2, 3])):
            head = [] if index == 0 and rng.random() < 0.6 else [rng.choice(["---", "--- # doc", "---  "])]
            tail = ["..."] if rng.random() < 0.05 else []
            parts.append("\n".join([*head, *self.document(), *tail]))
        text = "\n".join(parts)
        return text + rng.choice(["\n", "\n", "", "\n\n", "\n# end\n"])


# --- mutations ---------------------------------------------------------------------------------

MUTANTS = ":#-[]{},'\"&*!|>%?@` \t\n\r\\"


def _mutated(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        at = rng.randrange(len(text) + 1)
        if roll < 0.3:
            text = text[:at] + rng.choice(MUTANTS) + text[at:]
        elif roll < 0.5:
            text = text[:at] + text[at + 1:]
        elif roll < 0.75:
            text = text[:at] + rng.choice(MUTANTS) + text[at + 1:]
        else:  # re-indent one line
            lines = text.split("\n")
            index = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines[index] = " " * rng.randint(1, 2) + lines[index]
            else:
                lines[index] = lines[index][rng.randint(1, 2):] if lines[index].startswith(" ") else lines[index]
            text = "\n".join(lines)
    return text


def _project_files() -> list[bytes]:
    found = []
    for pattern in ("*.yaml", "*.yml"):
        for path in sorted(ROOT.glob(f"**/{pattern}")):
            if ".git" not in path.parts and path.is_file():
                found.append(path.read_bytes())
    return found


def _bench_files(tmp_path: Path) -> list[bytes]:
    # issue 13's repo, and bench_validate.py's (requested addresses, routes with originRequest)
    validate = ScaleRepo(services=20, pools=1, routes=20, namespaces=1, ports=1, pool_prefix=16,
                         requested_addresses=True, origin_request=True)
    repos = [ScaleRepo.for_services(60).write(tmp_path / "scale"), validate.write(tmp_path / "validate")]
    return [path.read_bytes() for repo in repos for path in sorted(repo.glob("*.yaml"))]


def test_the_project_and_bench_files_read_the_same_both_ways(tmp_path: Path) -> None:
    tally = _Tally()
    files = _project_files() + _bench_files(tmp_path)
    for data in files:
        _agree(data, tally)
    assert len(files) >= 20
    assert tally.taken >= len(files) - 2  # every file of the subset, which is nearly all of them


def test_generated_documents_read_the_same_both_ways() -> None:
    rng = random.Random(SEED)
    generator = _Generator(rng)
    tally = _Tally()
    for _ in range(3000):
        _agree(generator.file().encode(), tally)
    # the generator writes the subset: most files must take the fast path, or this tests nothing
    assert tally.taken > 2000, (tally.taken, tally.declined)


def test_mutated_documents_are_declined_or_read_the_same(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    generator = _Generator(rng)
    sources = [data.decode() for data in _project_files() + _bench_files(tmp_path)]
    tally = _Tally()
    for index in range(6000):
        source = sources[index % len(sources)] if index % 4 == 0 else generator.file()
        if len(source) > 4000:  # a window of a large file keeps the test fast
            start = source.find("\n", rng.randrange(len(source) - 2000)) + 1
            source = source[start:start + 2000]
        _agree(_mutated(source, rng).encode(), tally)
    assert tally.taken > 1000 and tally.declined > 1000, (tally.taken, tally.declined)


@pytest.mark.parametrize("text", [
    "a: 1\n", "---\n", "---\n---\n", "a: 1\n---\n", "a: 1\n...\n", "---\n# c", "\n\n---   \n\n", "a:\nb: 1\n",
    "- \n- a\n", "-\n", " x\n", "\n  a: 1\n", "k:\n- a\n-\n", "--- # c\na: 1\n", "a:\n  - b\n  -",
    "a: [ ]\nb: { }\n", 'a: [a, "b", 1]  # c\n', 'a: {x: 1, "y": [2]}\n', "a: 'it''s'\n", 'a: "x\\ty\\u00e9"\n',
    "ab: c #d\n", "a: b#c\n", "- a:\n  - 1\n- b\n", "a: b\n  # c\n", "a: [fd00::/64, a:b]\n", "é: ü\nü: [é, 日本]\n",
    "a: 1\n---\na: 2\n---\na: 3\n---\na: 4\n", "- - -\n" * 0 + "-   a: 1\n    b:\n    - 2\n",
])
def test_everyday_yaml_takes_the_fast_path(text: str) -> None:
    data = text.encode()
    assert fast_documents(data) is not None
    _agree(data, _Tally())


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: |\n  x\n", "a: >\n  x\n", "a: b\n  c\n", "a: 'x\n  y'\n",
    "? a\n: b\n", "<<: {a: 1}\n", "a: 1\na: 2\n", "a:\t1\n", "a: 1\r\n", "\ufeffa: 1\n", "%YAML 1.2\n---\na: 1\n",
    'a: "\\q"\n', "a: [1,\n  2]\n", "- - a\n", "a: b: c\n", "a: 1\n...\nb: 2\n", "...\n", "\n...\n",
    "a: x\x85y\n",
])
def test_anything_outside_the_subset_is_declined(text: str) -> None:
    assert fast_documents(text.encode()) is None


def test_the_bench_repos_take_the_fast_path(tmp_path: Path) -> None:
    # a regression that silently falls back to libyaml would only show as a slower benchmark
    shared = 0
    for data in _bench_files(tmp_path):
        documents = fast_documents(data)
        assert documents is not None and len(documents) >= 1
        assert parse_yaml(data, "f.yaml")[0][0].value == documents[0].value
        shared += sum(1 for doc in documents if doc.shift)
    assert shared >= 100  # and most of their documents come from compiled shapes


def test_documents_of_one_shape_share_their_marks() -> None:
    text = "".join(f"---\nkind: K\nmetadata:\n  name: n{i}\nspec:\n  ports: [{i}, 2]\n" for i in range(5))
    first, second, *rest = fast_documents(text.encode()) or []  # the second one compiles the shape
    assert not first.shift and not second.shift and all(doc.shift and doc.marks is rest[0].marks for doc in rest)
    assert [doc.position(("spec", "ports", 1)) for doc in [first, second, *rest]] == [(6 + 6 * i, 14) for i in range(5)]
    _agree(text.encode(), _Tally())


def test_the_shortcut_for_simple_lines_finds_what_the_full_expression_finds() -> None:
    from reconciler.desired.yamlfast import _SIMPLE_ENTRY, _Reader
    generator = _Generator(random.Random(SEED + 2))
    checked = 0
    for _ in range(1500):
        for line in generator.file().split("\n"):
            match = _SIMPLE_ENTRY.fullmatch(line)
            if match is not None:
                assert _Reader().simple_entry(match) == _Reader().any_line(line), line
                checked += 1
    assert checked > 150
