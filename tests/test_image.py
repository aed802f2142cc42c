"""The container image builds from the repo's Dockerfile and runs portside, for real.

No container registry is reachable here, so the base image is made locally: debootstrap a minimal
Debian bookworm with python3 (3.11) and python3-venv, `podman import` it, and build the Dockerfile
with `--build-arg BASE_IMAGE=` pointing at it (pip still reaches PyPI, apt the Debian mirror).

Besides `portside --help`, the image runs as deploy/ runs it: the reconciler with a read-only root,
no capabilities and uid 65532 (`run --once`, and a SIGTERM stop), and the speaker as root with
CAP_NET_RAW alone in a node's network namespace of a test topology (tests/netns.py), where a
client's arping gets its answer — and none without CAP_NET_RAW.

Needs root and the Debian packages podman, debootstrap, runc, arping and iproute2 (crun cannot
start containers on hosts with hybrid cgroups, so the runs use runc). The debootstrapped base (a tarball) and podman's
storage live in PORTSIDE_TEST_CACHE (default /var/cache/portside-test), outside the repo, so reruns
skip debootstrap and reuse unchanged layers. Cold: about 2.5 minutes; warm: a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from netns import Topology

from reconciler.cli import COMMANDS
from reconciler.planning.announcement_table import (
    DEFAULT_HEARTBEAT,
    Announcement,
    AnnouncementTable,
    NodeInfo,
    encode_table,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PORTSIDE_TEST_CACHE", "/var/cache/portside-test"))
BASE_TAR = CACHE / "bookworm-python3.tar"
# podman's run state, on tmpfs, one per storage (two caches must not share it).
RUNROOT = Path("/run/portside-test") / hashlib.sha256(str(CACHE).encode()).hexdigest()[:12]
BASE_IMAGE = "localhost/portside-base:bookworm-python3"
IMAGE = "localhost/portside:test"
# The Dockerfile's non-root user.
IMAGE_UID = 65532
# Host CA bundle, handed to pip as a build secret so a TLS-intercepting proxy does not break it.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What portside adds on top of the base (venv, git, tini). Measured at about 330 MB; the budget
# catches a dependency or a build change that balloons it.
ADDED_SIZE_BUDGET = 450 * 1024 * 1024


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap and rootful podman)"
    missing = [tool for tool in ("podman", "debootstrap", "runc", "arping", "ip") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install -y podman debootstrap runc arping iproute2)"
    return None


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run podman on the test's own storage, so nothing mixes with the host's images."""
    command = [
        "podman",
        "--root", str(CACHE / "storage"),
        "--runroot", str(RUNROOT),
        "--runtime", "runc",
        *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def _run_limits() -> list[str]:
    # Without CAP_SYS_RESOURCE the runtime cannot raise rlimits to podman's defaults; ask for no
    # more than this process already has.
    flags = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, _hard = resource.getrlimit(limit)
        value = 1024 if soft == resource.RLIM_INFINITY else min(soft, 1024)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def run_in_image(
    *args: str, entrypoint: str | None = None, check: bool = True, options: Sequence[str] = ("--rm",)
) -> subprocess.CompletedProcess[str]:
    """`podman run` the built image with no network at all."""
    options = ["run", *options, "--network", "none", *_run_limits()]
    if entrypoint is not None:
        options += ["--entrypoint", entrypoint]
    return podman(*options, IMAGE, *args, check=check, timeout=120)


def _build_base_tarball() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as rootfs:
        subprocess.run(
            [
                "debootstrap", "--variant=minbase", "--include=python3,python3-venv",
                "bookworm", rootfs, "http://deb.debian.org/debian",
            ],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        # The downloaded .debs are not part of a base image.
        for deb in Path(rootfs, "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        partial = BASE_TAR.with_suffix(".partial")
        subprocess.run(["tar", "--create", "--numeric-owner", "--xattrs", f"--file={partial}",
                        f"--directory={rootfs}", "."], check=True, capture_output=True, timeout=300)
        partial.rename(BASE_TAR)  # whole tarball or none: an interrupted run leaves no half base


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    reason = _missing_prerequisite()
    if reason:
        pytest.skip(reason)  # says which: needs root, or podman/debootstrap/runc
    started = time.monotonic()
    if not BASE_TAR.exists():
        _build_base_tarball()
        print(f"debootstrapped the base in {time.monotonic() - started:.0f}s")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        podman("import", str(BASE_TAR), BASE_IMAGE)
    build = [
        "build", "--isolation", "chroot", "--pull=never",
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--file", str(REPO / "Dockerfile"), "--tag", IMAGE,
    ]  # fmt: skip
    if CA_BUNDLE.exists():
        build += ["--secret", f"id=ca-certificates,src={CA_BUNDLE}"]
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    building = time.monotonic()
    podman(*build, str(REPO), timeout=900)
    print(f"built {IMAGE} in {time.monotonic() - building:.0f}s")
    # Each code change leaves the last image untagged (~300 MB); drop it, but keep the cached
    # build-stage layers so the next build does not download the dependencies again.
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip():
        podman("rmi", previous, check=False)
    yield IMAGE


def _inspect(name: str) -> dict[str, object]:
    result: list[dict[str, object]] = json.loads(podman("image", "inspect", name).stdout)
    return result[0]


def test_portside_help_runs_in_the_image(image: str) -> None:
    result = run_in_image("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: portside")
    for command in COMMANDS:
        assert command in result.stdout


def test_default_command_is_help(image: str) -> None:
    assert run_in_image().stdout.startswith("usage: portside")


@pytest.mark.parametrize("command", ["run", "speaker", "validate", "diff"])
def test_subcommand_help_runs_in_the_image(image: str, command: str) -> None:
    # Each subcommand imports its own module tree (kubernetes client, pyroute2, git, ...).
    result = run_in_image(command, "--help", check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: portside {command}")


def test_every_reconciler_module_imports_in_the_image(image: str) -> None:
    script = (
        "import importlib, pkgutil, reconciler\n"
        "modules = pkgutil.walk_packages(reconciler.__path__, 'reconciler.')\n"
        # __main__ would run the CLI.
        "names = [m.name for m in modules if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = run_in_image("-c", script, entrypoint="python3", check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 10  # the walk found the package, not an empty directory


def test_runs_as_non_root_with_git_and_no_sources(image: str) -> None:
    config = _inspect(image)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert run_in_image("-u", entrypoint="id").stdout.strip() == str(IMAGE_UID)
    assert run_in_image("--version", entrypoint="git").stdout.startswith("git version")
    # Multi-stage: the build stage's sources and the build tools stay out of the final image.
    leftovers = run_in_image("-c", "ls -d /src /opt/portside/bin/pip 2>/dev/null; true", entrypoint="sh")
    assert leftovers.stdout == ""


def test_image_adds_little_to_its_base(image: str) -> None:
    added = _size(_inspect(image)) - _size(_inspect(BASE_IMAGE))
    print(f"portside adds {added / 2**20:.0f} MiB to its base image")
    assert 0 < added < ADDED_SIZE_BUDGET


def _size(inspected: dict[str, object]) -> int:
    size = inspected["Size"]
    assert isinstance(size, int)
    return size


# How deploy/reconciler.yaml runs the reconciler: read-only root, no capabilities, uid 65532, the
# cache on an emptyDir (here a tmpfs) that is also HOME.
AS_THE_DEPLOYMENT = (
    "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", f"--user={IMAGE_UID}:{IMAGE_UID}",
    "--tmpfs=/var/cache/portside", "--tmpfs=/tmp", "--env=HOME=/var/cache/portside",
)  # fmt: skip


def _example_repo_and_state(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "example-repo", repo)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, IMAGE_UID, IMAGE_UID)
    return repo, state


def test_the_reconciler_runs_read_only_as_deployed(image: str, tmp_path: Path) -> None:
    repo, state = _example_repo_and_state(tmp_path)
    result = run_in_image(
        "run", "--source=/repo", "--state=/state", "--cache-dir=/var/cache/portside", "--once",
        check=False,
        options=["--rm", *AS_THE_DEPLOYMENT, f"--volume={repo}:/repo:ro", f"--volume={state}:/state"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((state / "announcements.json").read_text())["announcements"]


def test_the_reconciler_stops_promptly_on_sigterm(image: str, tmp_path: Path) -> None:
    repo, state = _example_repo_and_state(tmp_path)
    name = f"portside-test-{os.getpid()}"
    run_in_image(
        "run", "--source=/repo", "--state=/state", "--cache-dir=/var/cache/portside", "--listen=127.0.0.1:8080",
        options=["--detach", f"--name={name}", *AS_THE_DEPLOYMENT, f"--volume={repo}:/repo:ro",
                 f"--volume={state}:/state"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (state / "announcements.json").exists():
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            threading.Event().wait(0.1)
        started = time.monotonic()
        podman("stop", "--time=30", name)  # SIGTERM, then SIGKILL after 30 s
        stopped_after = time.monotonic() - started
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    finally:
        podman("rm", "--force", name, check=False)
    print(f"stopped {stopped_after:.1f}s after SIGTERM")
    assert code == "0"
    assert stopped_after < 10, "SIGTERM did not stop portside run: the grace period ran out"


# How deploy/speaker.yaml runs the speaker: in the node's network namespace (here one of a test
# topology's), uid 0 with CAP_NET_RAW as its only capability, read-only root.
SPEAKER_IP = "10.77.0.200"


def _speaker_in(topology: Topology, tmp_path: Path, capabilities: Sequence[str]) -> str:
    (tmp_path / "table").mkdir()
    table = AnnouncementTable(1, "rev1", DEFAULT_HEARTBEAT, {"a": NodeInfo(topology["a"].ip)},
                              (Announcement(SPEAKER_IP, "default/blog", (), ("a",)),))
    (tmp_path / "table" / "announcements.json").write_text(encode_table(table))
    (tmp_path / "key").write_text("image-test-heartbeat-key-0123456789\n")
    name = f"portside-speaker-test-{os.getpid()}"
    podman(
        "run", "--detach", f"--name={name}", f"--network=ns:/run/netns/{topology['a'].netns}", *_run_limits(),
        "--read-only", "--cap-drop=ALL", *capabilities, "--security-opt=no-new-privileges", "--user=0:0",
        f"--volume={tmp_path / 'table'}:/table:ro", f"--volume={tmp_path / 'key'}:/key:ro",
        IMAGE, "speaker", "--node=a", "--announcements=/table/announcements.json", "--heartbeat-key-file=/key",
        "--listen=127.0.0.1:7473",
    )  # fmt: skip
    return name


def _wait(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        threading.Event().wait(0.05)


@pytest.fixture
def lan() -> Iterator[Topology]:
    with Topology(["a", "client"]) as topology:
        yield topology


def test_the_speaker_answers_arp_with_net_raw_only(image: str, lan: Topology, tmp_path: Path) -> None:
    name = _speaker_in(lan, tmp_path, ["--cap-add=NET_RAW"])
    try:
        _wait(lambda: lan["client"].arping(SPEAKER_IP, count=1) == [lan["a"].mac.lower()],
              f"node a's speaker to answer ARP for {SPEAKER_IP}")
    finally:
        logs = podman("logs", name, check=False).stderr
        podman("rm", "--force", name, check=False)
    assert "Traceback" not in logs, logs


def test_the_speaker_needs_net_raw(image: str, lan: Topology, tmp_path: Path) -> None:
    name = _speaker_in(lan, tmp_path, [])
    try:
        _wait(lambda: "CAP_NET_RAW" in podman("logs", name, check=False).stderr,
              "the speaker to say it needs CAP_NET_RAW")
        assert lan["client"].arping(SPEAKER_IP, count=1) == []
    finally:
        podman("rm", "--force", name, check=False)
