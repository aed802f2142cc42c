"""The loop looks the public address up again on the DynamicDNS interval, with no other trigger."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from test_controller_loop import Outcome, Recorder, make, wait_for
from test_git_source import Remote

from reconciler.controller.loop import Controller
from reconciler.source import Checkout


@dataclass
class AddressOutcome(Outcome):
    recheck_after: float | None = 0.05


class AddressRecorder(Recorder):
    def __init__(self, recheck_after: float | None) -> None:
        super().__init__()
        self.recheck_after = recheck_after

    def __call__(self, checkout: Checkout) -> AddressOutcome:
        super().__call__(checkout)
        return AddressOutcome(recheck_after=self.recheck_after)


def test_a_repo_with_dynamic_dns_is_reconciled_again_on_its_interval(tmp_path: Path) -> None:
    remote = Remote(tmp_path)
    first = remote.push({"a.yaml": "v: 1\n"})
    recorder = AddressRecorder(recheck_after=0.05)
    controller: Controller = make(remote, tmp_path, recorder)
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # Poll and resync are an hour away: only the address trigger can bring these reconciles.
        wait_for(lambda: len(recorder.revisions) >= 3, what="address re-checks")
    finally:
        stop.set()
        controller.stop_waiting()
        thread.join(timeout=5)
    assert set(recorder.revisions) == {first}
