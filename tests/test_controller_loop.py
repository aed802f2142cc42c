"""The trigger loop with a real git repository and a recording reconcile function."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_git_source import Remote

from reconciler.common.errors import ConfigError, Diagnostic, PlanRefused, ProviderError
from reconciler.controller.loop import Backoff, Controller, Timing, Trigger
from reconciler.source import Checkout
from reconciler.source.git import GitSource


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout}s")


@dataclass
class Outcome:
    changes_applied: int = 1
    summary: Mapping[str, int] = field(default_factory=lambda: {"create": 1})
    errors: list[str] = field(default_factory=list)


class Recorder:
    """A reconcile function: reads the checkout like the engine would, records what it saw.

    A file containing ``broken`` is a load error at its line; ``fail`` makes the next calls raise.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (revision, content of a.yaml)
        self.fail: list[BaseException] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, checkout: Checkout) -> Outcome:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        text = (checkout.root / "a.yaml").read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if "broken" in line:
                raise ConfigError([Diagnostic("a.yaml", number, 3, "unknown field 'broken'")])
        if self.fail:
            raise self.fail.pop(0)
        self.seen.append((checkout.revision, text))
        return Outcome()

    @property
    def revisions(self) -> list[str]:
        return [revision for revision, _ in self.seen]


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


def make(remote: Remote, tmp_path: Path, recorder: Recorder, **kwargs: object) -> Controller:
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    timing = kwargs.pop("timing", Timing(interval=3600, resync=3600, backoff=Backoff(0.05, 0.2)))
    return Controller(source, recorder, timing=timing, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def running() -> Iterator[Callable[[Controller], None]]:
    threads: list[tuple[threading.Thread, threading.Event, Controller]] = []

    def start(controller: Controller) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=controller.run, args=(stop,), daemon=True)
        thread.start()
        threads.append((thread, stop, controller))

    yield start
    for thread, stop, controller in threads:
        stop.set()
        controller.stop_waiting()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_poll_and_unchanged_revisions(remote: Remote, tmp_path: Path) -> None:
    first = remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    controller = make(remote, tmp_path, recorder)
    controller.step(frozenset({Trigger.STARTUP}))
    assert recorder.revisions == [first]
    controller.step(frozenset({Trigger.POLL}))
    assert recorder.revisions == [first], "an unchanged revision is not reconciled again on a poll"
    controller.step(frozenset({Trigger.RESYNC}))
    assert recorder.revisions == [first, first], "the resync reconciles to repair drift"
    second = remote.push({"a.yaml": "v: 2\n"})
    controller.step(frozenset({Trigger.POLL}))
    assert recorder.seen[-1] == (second, "v: 2\n")
    status = controller.status.snapshot()
    assert status["lastAppliedRevision"] == status["lastAttemptedRevision"] == second
    assert status["errors"] == [] and status["lastPlanSummary"] == {"create": 1}
    assert controller.metrics.reconciles.value(result="success") == 3
    assert controller.metrics.revision.value(revision=second) == 1
    rendered = controller.metrics.registry.render()
    assert 'portside_last_applied_revision_info{revision="' + first not in rendered


def test_broken_commit_keeps_the_last_good_revision(remote: Remote, tmp_path: Path) -> None:
    good = remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    events: list[tuple[str, str, str]] = []
    controller = make(remote, tmp_path, recorder, events=lambda *e: events.append(e))
    controller.step(frozenset({Trigger.STARTUP}))

    broken = remote.push({"a.yaml": "v: 2\n  broken: true\n"})
    controller.step(frozenset({Trigger.WEBHOOK}))
    status = controller.status.snapshot()
    assert status["lastAttemptedRevision"] == broken
    assert status["lastAppliedRevision"] == good
    assert status["errors"] == ["a.yaml:2:3: unknown field 'broken'"]
    assert controller.metrics.errors.value(kind="config") == 1
    message = f"revision {broken}: a.yaml:2:3: unknown field 'broken'"
    assert events == [("Warning", "InvalidRevision", message)]

    controller.step(frozenset({Trigger.POLL}))  # the same broken head is not retried on every poll
    assert controller.metrics.errors.value(kind="config") == 1
    # A new LoadBalancer Service (a watch event) is served from the last good revision, and the
    # broken head's errors stay visible.
    controller.step(frozenset({Trigger.WATCH}))
    assert recorder.seen[-1] == (good, "v: 1\n")
    assert controller.status.snapshot()["errors"] == ["a.yaml:2:3: unknown field 'broken'"]
    assert len(events) == 1

    fixed = remote.push({"a.yaml": "v: 3\n"})
    controller.step(frozenset({Trigger.POLL}))
    status = controller.status.snapshot()
    assert recorder.seen[-1] == (fixed, "v: 3\n")
    assert status["lastAppliedRevision"] == fixed and status["errors"] == []


def test_dead_remote_backs_off_and_recovers(remote: Remote, tmp_path: Path) -> None:
    good = remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    controller = make(remote, tmp_path, recorder)
    controller.step(frozenset({Trigger.STARTUP}))
    moved = remote.bare.with_name("moved.git")
    remote.bare.rename(moved)
    controller.step(frozenset({Trigger.POLL}))
    status = controller.status.snapshot()
    assert status["lastAppliedRevision"] == good
    assert "git fetch failed" in status["errors"][0]
    assert controller.metrics.errors.value(kind="source") == 1
    assert controller._retry_at is not None
    controller.step(frozenset({Trigger.WATCH}))  # cluster changes still served meanwhile
    assert recorder.revisions == [good, good]
    assert controller.status.snapshot()["errors"], "the dead remote stays reported"
    moved.rename(remote.bare)
    newer = remote.push({"a.yaml": "v: 2\n"})
    controller.step(frozenset({Trigger.RETRY}))
    assert recorder.revisions[-1] == newer
    assert controller.status.snapshot()["errors"] == []
    assert controller._retry_at is None


def test_temporary_api_errors_retry_with_backoff(remote: Remote, tmp_path: Path,
                                                 running: Callable[[Controller], None]) -> None:
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    recorder.fail = [ProviderError("HTTP 503 from Cloudflare", temporary=True, status=503),
                     ProviderError("HTTP 429", temporary=True, status=429)]
    controller = make(remote, tmp_path, recorder)
    running(controller)
    wait_for(lambda: len(recorder.seen) == 1, what="success after two retries")
    assert controller.metrics.errors.value(kind="provider") == 2
    assert controller.metrics.reconciles.value(result="success") == 1
    assert controller.status.snapshot()["errors"] == []


def test_unexpected_exceptions_do_not_end_the_loop(remote: Remote, tmp_path: Path,
                                                   running: Callable[[Controller], None]) -> None:
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    recorder.fail = [RuntimeError("a bug")]
    controller = make(remote, tmp_path, recorder)
    running(controller)
    wait_for(lambda: len(recorder.seen) == 1, what="recovery after a bug")
    assert controller.metrics.errors.value(kind="internal") == 1


class FlakySource:
    """A real git source whose fetch raises an unexpected exception while ``faults`` has any left."""

    def __init__(self, inner: GitSource) -> None:
        self.inner = inner
        self.faults: list[BaseException] = []
        self.calls = 0

    def sync(self) -> Checkout:
        self.calls += 1
        if self.faults:
            raise self.faults.pop(0)
        return self.inner.sync()

    def checkout(self, revision: str) -> Checkout:
        return self.inner.checkout(revision)

    def describe(self) -> str:
        return self.inner.describe()


TOKEN = "ghp_loopSecretToken0123456789"


def test_an_exception_raised_by_the_source_is_shown_retried_and_survived(
        remote: Remote, tmp_path: Path, running: Callable[[Controller], None]) -> None:
    first = remote.push({"a.yaml": "v: 1\n"})
    source = FlakySource(GitSource(remote.url, cache_dir=tmp_path / "cache"))
    # What Python 3.11.2 raised from the git source (a keyword its tarfile lacks), and worse: a
    # message carrying a credential.
    source.faults = [TypeError("TarFile.extractall() got an unexpected keyword argument 'filter'"),
                     TypeError(f"bad header 'Authorization: token {TOKEN}' for https://u:{TOKEN}@h/r.git")]
    recorder = Recorder()
    events: list[tuple[str, str, str]] = []
    controller = Controller(source, recorder, events=lambda *e: events.append(e), secrets=[TOKEN],
                            timing=Timing(interval=3600, resync=3600, backoff=Backoff(0.2, 0.4)))
    running(controller)

    wait_for(lambda: controller.metrics.errors.value(kind="internal") == 1, what="the first fault shown")
    status = controller.status.snapshot()
    assert status["errors"] == ["internal error: TypeError: TarFile.extractall() got an unexpected keyword "
                                "argument 'filter'"]
    assert status["lastAppliedRevision"] is None
    assert events[0][:2] == ("Warning", "ReconcileError") and "TypeError" in events[0][2]
    assert controller.metrics.fetches.value(result="error") >= 1

    # Nothing else asks (no poll for an hour): the backoff alone retries, through the second fault.
    wait_for(lambda: controller.metrics.errors.value(kind="internal") == 2, what="a retry after the backoff")
    shown = controller.status.snapshot()["errors"]
    assert shown == ["internal error: TypeError: bad header 'Authorization: token ***' for https://***@h/r.git"]
    assert all(TOKEN not in message for _, _, message in events)
    wait_for(lambda: recorder.revisions == [first], what="the revision applied once the source recovers")
    status = controller.status.snapshot()
    assert status["lastAppliedRevision"] == first and status["errors"] == []

    # The loop lives on: a later commit is applied as usual.
    second = remote.push({"a.yaml": "v: 2\n"})
    controller.trigger(Trigger.WEBHOOK)
    wait_for(lambda: recorder.revisions[-1:] == [second], what="the next good revision applied")
    assert source.calls >= 4


def test_an_exception_in_a_reconcile_is_shown_with_its_type_and_retried(remote: Remote, tmp_path: Path) -> None:
    good = remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    recorder.fail = [KeyError(f"token={TOKEN}")]

    def failing_sink(*_event: str) -> None:
        raise OSError("the API server is gone")  # recording the Event fails too: still no crash

    controller = make(remote, tmp_path, recorder, events=failing_sink, secrets=[TOKEN])
    controller.step(frozenset({Trigger.STARTUP}))
    status = controller.status.snapshot()
    assert status["errors"] == ["internal error: KeyError: 'token=***'"]
    assert status["lastAttemptedRevision"] == good and status["lastAppliedRevision"] is None
    assert controller.metrics.reconciles.value(result="internal") == 1
    assert controller._retry_at is not None, "retried after a backoff"
    controller.step(frozenset({Trigger.RETRY}))
    assert recorder.revisions == [good]
    assert controller.status.snapshot()["errors"] == []


def test_secrets_from_the_environment_are_masked_too(remote: Remote, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cloudflare_token = "cf-env-token-abcdef0123456789"
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cloudflare_token)
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    recorder.fail = [ValueError(f"header Authorization: Bearer {cloudflare_token} rejected")]
    events: list[tuple[str, str, str]] = []
    controller = make(remote, tmp_path, recorder, events=lambda *e: events.append(e))
    controller.step(frozenset({Trigger.STARTUP}))
    assert controller.status.snapshot()["errors"] == [
        "internal error: ValueError: header Authorization: Bearer *** rejected"]
    assert events and cloudflare_token not in events[0][2]


def test_refused_plan_is_reported_not_retried(remote: Remote, tmp_path: Path) -> None:
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    recorder.fail = [PlanRefused("the plan deletes 4 of the 4 things portside owns")]
    controller = make(remote, tmp_path, recorder)
    controller.step(frozenset({Trigger.STARTUP}))
    assert controller.status.snapshot()["errors"] == ["the plan deletes 4 of the 4 things portside owns"]
    assert controller.metrics.errors.value(kind="refused") == 1
    assert controller._retry_at is None


def test_triggers_during_a_reconcile_coalesce_into_one(remote: Remote, tmp_path: Path,
                                                       running: Callable[[Controller], None]) -> None:
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    controller = make(remote, tmp_path, recorder)
    recorder.gate = threading.Event()
    running(controller)
    assert recorder.entered.wait(5)
    newest = remote.push({"a.yaml": "v: 2\n"})
    for _ in range(10):
        controller.trigger(Trigger.WEBHOOK)
        controller.trigger(Trigger.WATCH)
    recorder.gate.set()
    wait_for(lambda: len(recorder.seen) == 2, what="the follow-up reconcile")
    wait_for(lambda: controller.metrics.triggers.value(reason="watch") == 10)
    assert recorder.revisions[-1] == newest
    assert controller.reconciles == 2
    with controller._cond:
        assert not controller._pending, "everything pending was served by the one follow-up"


def test_webhook_and_poll_timing(remote: Remote, tmp_path: Path,
                                 running: Callable[[Controller], None]) -> None:
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    controller = make(remote, tmp_path, recorder, timing=Timing(interval=0.3, resync=3600))
    running(controller)
    wait_for(lambda: len(recorder.seen) == 1)
    pushed = remote.push({"a.yaml": "v: 2\n"})
    start = time.monotonic()
    controller.trigger(Trigger.WEBHOOK)
    wait_for(lambda: recorder.revisions[-1] == pushed)
    assert time.monotonic() - start < 1.0
    polled = remote.push({"a.yaml": "v: 3\n"})
    start = time.monotonic()
    wait_for(lambda: recorder.revisions[-1] == polled, what="the poll")
    assert time.monotonic() - start < 0.3 + 1.0


def test_only_the_leader_reconciles(remote: Remote, tmp_path: Path) -> None:
    remote.push({"a.yaml": "v: 1\n"})
    recorder = Recorder()
    leading = False
    controller = make(remote, tmp_path, recorder, is_leader=lambda: leading)
    controller.step(frozenset({Trigger.STARTUP, Trigger.WEBHOOK, Trigger.RESYNC}))
    assert recorder.seen == [] and controller.status.snapshot()["leader"] is False
    leading = True
    controller.step(frozenset({Trigger.LEADER}))
    assert len(recorder.seen) == 1 and controller.status.snapshot()["leader"] is True


@pytest.mark.parametrize(("failures", "low", "high"), [
    (0, 0.0, 0.0), (1, 0.5, 1.0), (2, 1.0, 2.0), (4, 4.0, 8.0), (9, 128.0, 256.0),
    (10, 150.0, 300.0), (64, 150.0, 300.0),
])
def test_backoff(failures: int, low: float, high: float) -> None:
    backoff = Backoff(base=1.0, cap=300.0)
    assert backoff.delay(failures, rand=lambda: 0.0) == low
    assert backoff.delay(failures, rand=lambda: 1.0) == high
