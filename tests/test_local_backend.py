"""The embedded default end to end: `portside apply example-repo` with no cluster at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.backends.local import LocalBackend
from reconciler.common.errors import StateLocked
from reconciler.planning.announcement_table import decode_table
from tests.conftest import run_cli, write_repo

EXAMPLE = Path(__file__).resolve().parent.parent / "example-repo"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "example-repo"
    shutil.copytree(EXAMPLE, copy)
    return copy


def state(state_dir: Path) -> dict[str, object]:
    return dict(json.loads((state_dir / "state.json").read_text()))


def test_apply_example_on_a_fresh_machine_then_nothing_to_do(example: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = run_cli("apply", str(example), "--state", str(state_dir))
    assert first.code == 0, first.err
    assert "+ Service default/blog" in first.out
    services = state(state_dir)["services"]
    assert services == {"default/blog": {"ingress": ["192.168.1.100"], "pool": "home-pool"}}
    table = decode_table((state_dir / "announcements.json").read_text())
    assert [(a.ip, a.service) for a in table.announcements] == [("192.168.1.100", "default/blog")]
    config = (state_dir / "cloudflared" / "home.yml").read_text()
    assert "hostname: blog.example.dev" in config and "service: http://192.168.1.100:80" in config

    second = run_cli("apply", str(example), "--state", str(state_dir))
    assert second.code == 0 and "No changes" in second.out
    assert run_cli("diff", str(example), "--state", str(state_dir), "--exit-code").code == 0


def test_the_default_backend_is_dot_portside_in_the_working_directory(
        example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = subprocess.run([sys.executable, "-m", "reconciler", "apply", str(example)],
                            capture_output=True, text=True, env={**os.environ}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".portside" / "state.json").exists()
    again = subprocess.run([sys.executable, "-m", "reconciler", "diff", str(example), "--exit-code"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr


def test_diff_exit_codes(example: Path, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    assert run_cli("diff", str(example), "--state", state_dir, "--exit-code").code == 2
    assert run_cli("diff", str(example), "--state", state_dir).code == 0
    broken = write_repo(tmp_path / "broken", {"x.yaml": "apiVersion: portside.io/v1alpha1\nkind: Nope\n"})
    failed = run_cli("diff", str(broken), "--state", state_dir, "--exit-code")
    assert failed.code == 1 and f"{broken}/x.yaml:2:7" in failed.err
    assert not (tmp_path / "state").exists()  # a broken repo writes nothing


def test_changing_the_pool_moves_the_ip_and_the_route_in_one_plan(example: Path, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    assert run_cli("apply", str(example), "--state", state_dir).code == 0
    write_repo(example, {"metallb/dmz.yaml": """
        apiVersion: metallb.io/v1beta1
        kind: IPAddressPool
        metadata: {name: dmz, namespace: metallb-system}
        spec:
          addresses: [10.20.0.0/28]
    """})
    blog = example / "services" / "blog.yaml"
    blog.write_text(blog.read_text().replace("pool: home-pool", "pool: dmz"))
    plan = json.loads(run_cli("diff", str(example), "--state", state_dir, "--format", "json").out)
    targets = {(c["target"]["kind"], c["target"]["id"]): c for c in plan["changes"]}
    service = targets[("Service", "default/blog")]
    assert service["action"] == "update" and service["after"]["ingress"] == ["10.20.0.0"]
    route = targets[("TunnelConfiguration", "home")]
    assert route["after"][0]["service"] == "http://10.20.0.0:80"
    assert targets[("Announcement", "192.168.1.100")]["action"] == "delete"
    # The L2Advertisement names home-pool only: nothing answers ARP for dmz, and the plan says so.
    assert ("Announcement", "10.20.0.0") not in targets
    assert any("10.20.0.0" in w and "L2Advertisement" in w for w in plan["warnings"])
    assert run_cli("apply", str(example), "--state", state_dir).code == 0
    assert "http://10.20.0.0:80" in (Path(state_dir) / "cloudflared" / "home.yml").read_text()


def test_removing_an_exposure_revokes_its_ip(example: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert run_cli("apply", str(example), "--state", str(state_dir)).code == 0
    (example / "services" / "blog.yaml").unlink()
    result = run_cli("apply", str(example), "--state", str(state_dir))
    assert result.code == 0, result.err
    assert "- Service default/blog" in result.out
    assert state(state_dir)["services"] == {}
    assert decode_table((state_dir / "announcements.json").read_text()).announcements == ()


def test_a_crash_half_way_converges_on_the_next_run(example: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert run_cli("apply", str(example), "--state", str(state_dir)).code == 0
    # As if the process died after writing the announcement table but before state.json.
    (state_dir / "state.json").write_text(json.dumps({"version": 1, "services": {}}))
    result = run_cli("apply", str(example), "--state", str(state_dir))
    assert result.code == 0
    assert state(state_dir)["services"] == {"default/blog": {"ingress": ["192.168.1.100"], "pool": "home-pool"}}
    assert "No changes" in run_cli("diff", str(example), "--state", str(state_dir)).out


def test_a_corrupt_state_file_is_an_error_that_says_where(example: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text("{not json")
    result = run_cli("apply", str(example), "--state", str(state_dir))
    assert result.code == 1 and "state.json" in result.err
    assert (state_dir / "state.json").read_text() == "{not json"


def test_markdown_and_json_formats_show_the_same_plan(example: Path, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    plan = json.loads(run_cli("diff", str(example), "--state", state_dir, "--format", "json").out)
    assert plan["summary"] == {"create": 4, "update": 0, "delete": 0, "conflict": 0}
    assert {c["action"] for c in plan["changes"]} == {"create"}
    markdown = run_cli("diff", str(example), "--state", state_dir, "--format", "markdown").out
    assert markdown.startswith("### portside plan")
    for change in plan["changes"]:
        assert f"`{change['target']['kind']} {change['target']['id']}`" in markdown


def test_removing_a_local_tunnel_removes_its_config_file_but_not_foreign_files(
        example: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert run_cli("apply", str(example), "--state", str(state_dir)).code == 0
    foreign = state_dir / "cloudflared" / "mine.yml"
    foreign.write_text("tunnel: abc\ningress:\n- service: http_status:404\n")
    shutil.rmtree(example / "tunnel")
    result = run_cli("apply", str(example), "--state", str(state_dir))
    assert result.code == 0, result.err
    assert "- TunnelConfiguration home" in result.out
    assert not (state_dir / "cloudflared" / "home.yml").exists()
    assert foreign.exists()
    assert "No changes" in run_cli("diff", str(example), "--state", str(state_dir)).out


def test_a_route_to_a_port_the_service_lacks_is_a_warning(example: Path, tmp_path: Path) -> None:
    routes = example / "tunnel" / "routes.yaml"
    routes.write_text(routes.read_text().replace("port: 80", "port: 81"))
    plan = json.loads(run_cli("diff", str(example), "--state", str(tmp_path / "s"), "--format", "json").out)
    assert "route blog goes to port 81 of default/blog, which has port(s) 80" in plan["warnings"]


def test_errors_name_files_as_reached_from_the_working_directory(
        example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = example / "metallb" / "pool.yaml"
    pool.write_text(pool.read_text().replace("  addresses:", "  adresses:"))
    monkeypatch.chdir(example.parent)
    validate = run_cli("validate", "example-repo")
    assert validate.out.startswith("example-repo/metallb/pool.yaml:7:3: spec.adresses: unknown field")
    diff = run_cli("diff", "example-repo", "--state", str(tmp_path / "s"))
    assert "example-repo/metallb/pool.yaml:7:3: spec.adresses" in diff.err


POOL_AND_ADVERTISEMENT = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: shared, namespace: metallb-system}
spec:
  addresses: [10.60.0.1-10.60.0.4]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: shared, namespace: metallb-system}
spec:
  ipAddressPools: [shared]
"""


def exposure_repo(root: Path, *services: str) -> Path:
    files = {"pool.yaml": POOL_AND_ADVERTISEMENT}
    for name in services:
        files[f"{name}.yaml"] = f"""
            apiVersion: portside.io/v1alpha1
            kind: ServiceExposure
            metadata: {{name: {name}}}
            spec:
              service: {{namespace: default, name: {name}}}
              pool: shared
              ports: [{{name: http, port: 80}}]
        """
    return write_repo(root, files)


# `portside apply ARGS...` once the file GATE exists, with its modules imported before: so two
# processes start their apply within a millisecond of each other, as two people (or a person and
# a CI job) at the same moment.
GATED_APPLY = """
import os, sys, time
import reconciler.backends.local, reconciler.cli, reconciler.commands.apply
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
sys.exit(reconciler.cli.main(["apply", *sys.argv[2:]]))
"""


def apply_process(repo: Path, state_dir: Path, *extra: str, gate: Path | None = None) -> subprocess.Popen[str]:
    args = [str(repo), "--state", str(state_dir), "--allow-mass-delete", *extra]
    argv = [sys.executable, "-m", "reconciler", "apply", *args] if gate is None else \
        [sys.executable, "-c", GATED_APPLY, str(gate), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_applies_to_one_state_dir_take_turns(tmp_path: Path) -> None:
    """Two `portside apply` processes with different repos, started together, round after round:
    each plans against what the other wrote, so no IP ever has two Services and the announcement
    table always agrees with state.json."""
    repos = [exposure_repo(tmp_path / "one", "alpha"), exposure_repo(tmp_path / "two", "beta", "gamma")]
    state_dir = tmp_path / "state"
    for round_ in range(8):
        gate = tmp_path / f"go-{round_}"
        processes = [apply_process(repo, state_dir, gate=gate) for repo in (repos if round_ % 2 else repos[::-1])]
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        gate.touch()
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, f"round {round_}: {out}{err}"
        services: dict[str, dict[str, list[str]]] = state(state_dir)["services"]  # type: ignore[assignment]
        holders: dict[str, list[str]] = {}
        for key, recorded in services.items():
            for ip in recorded["ingress"]:
                holders.setdefault(ip, []).append(key)
        assert all(len(keys) == 1 for keys in holders.values()), f"round {round_}: {holders}"
        table = decode_table((state_dir / "announcements.json").read_text())
        announced = {a.ip: a.service for a in table.announcements}
        assert announced == {ip: keys[0] for ip, keys in holders.items()}, f"round {round_}"
        # The last apply wins whole: its repo's Services, and no other.
        assert set(services) in ({"default/alpha"}, {"default/beta", "default/gamma"}), f"round {round_}"


def test_an_apply_waits_for_the_lock_then_says_who_holds_it(tmp_path: Path) -> None:
    repo = exposure_repo(tmp_path / "repo", "alpha")
    state_dir = tmp_path / "state"
    with LocalBackend(state_dir).hold():
        result = apply_process(repo, state_dir, "--lock-timeout", "0.3")
        out, err = result.communicate(timeout=60)
    assert result.returncode == 1
    assert f"the local state directory {state_dir} is in use by another portside process (pid {os.getpid()})" in err
    assert "--lock-timeout" in err
    assert not (state_dir / "state.json").exists() and not (state_dir / "announcements.json").exists()
    assert out == ""


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from reconciler.backends.local import "
         "LocalBackend\nwith LocalBackend(Path(sys.argv[1])).hold():\n print('held', flush=True); sys.stdin.read()",
         str(state_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StateLocked, match=rf"\(pid {holder.pid}\)"), LocalBackend(state_dir).hold(timeout=0.1):
            pass
        holder.kill()
        holder.wait(timeout=10)
        with LocalBackend(state_dir).hold(timeout=5):
            assert (state_dir / ".lock").read_text() == f"{os.getpid()}\n"
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_diff_waits_for_an_apply_and_never_reads_half_of_its_writes(tmp_path: Path) -> None:
    # An apply writes announcements.json, then state.json: a read between the two would plan
    # against a table and a state that disagree. diff and snapshot share the lock apply holds alone.
    repo = exposure_repo(tmp_path / "repo", "alpha")
    state_dir = tmp_path / "state"
    assert run_cli("apply", str(repo), "--state", str(state_dir)).code == 0
    with LocalBackend(state_dir).hold():  # an apply in progress
        for command in (["diff", str(repo)], ["snapshot", str(repo), "--out", str(tmp_path / "live.json")]):
            result = run_cli(*command, "--state", str(state_dir), "--lock-timeout", "0.2")
            assert result.code == 1, result
            assert f"the local state directory {state_dir} is in use by another portside process " \
                   f"(pid {os.getpid()})" in result.err
        assert not (tmp_path / "live.json").exists()
    assert run_cli("diff", str(repo), "--state", str(state_dir), "--exit-code").code == 0


def test_readers_share_the_lock_and_write_nothing(tmp_path: Path) -> None:
    repo = exposure_repo(tmp_path / "repo", "alpha")
    state_dir = tmp_path / "state"
    assert run_cli("apply", str(repo), "--state", str(state_dir)).code == 0
    lock = state_dir / ".lock"
    before = lock.read_text()
    with LocalBackend(state_dir).hold(shared=True):  # another diff reading
        result = run_cli("diff", str(repo), "--state", str(state_dir), "--lock-timeout", "0", "--exit-code")
        assert result.code == 0, result
        with pytest.raises(StateLocked), LocalBackend(state_dir).hold(timeout=0):  # but an apply waits
            pass
    assert lock.read_text() == before  # the writer's pid stays; readers do not write it
    fresh = tmp_path / "never-applied"
    assert run_cli("diff", str(repo), "--state", str(fresh)).code == 0
    assert not fresh.exists()  # a read creates no state directory
