"""deploy/ and the CI example: valid Kubernetes objects that run the real CLI the right way.

Every object of `kubectl kustomize deploy/` (and of deploy/ci-readonly/) is validated offline
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), for the
oldest supported and the newest Kubernetes. The rest holds the manifests to what the code
expects: container arguments parse with portside's own parser, secret files are where the flags
point, ports and probes match --listen, and the security settings are the ones the docs promise.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reconciler.cli import build_parser
from reconciler.planning.announcement_table import CONFIGMAP_NAME, DEFAULT_HEARTBEAT
from tests.rbac import Obj, Policy, kustomize_build

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CI_READONLY = DEPLOY / "ci-readonly"
WORKFLOW = ROOT / "docs" / "ci-workflow.yml"
NAMESPACE = "portside-system"
# The oldest Kubernetes the manifests promise to work on, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

BASE = kustomize_build(DEPLOY)
CI_OBJECTS = kustomize_build(CI_READONLY)


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


DEPLOYMENT = find(BASE, "Deployment", "portside-reconciler")
DAEMONSET = find(BASE, "DaemonSet", "portside-speaker")


def container(workload: Obj) -> Obj:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _object_id(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


# -- what kustomize builds, and schema validity ----------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its built-in kustomize)")
@pytest.mark.parametrize("directory", [DEPLOY, CI_READONLY], ids=["base", "ci-readonly"])
def test_the_reader_builds_what_kustomize_builds(directory: Path) -> None:
    built = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    canonical = sorted(json.dumps(doc, sort_keys=True) for doc in yaml.safe_load_all(built) if doc)
    assert canonical == sorted(json.dumps(doc, sort_keys=True) for doc in kustomize_build(directory))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("obj", BASE + CI_OBJECTS, ids=_object_id)
def test_every_object_validates_against_the_kubernetes_schema(obj: Obj, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{_object_id(obj)} is not a valid Kubernetes {version} object: {exc.message} "
                    f"at {'/'.join(str(p) for p in exc.path)}")


def test_validation_catches_a_typo() -> None:
    # The schema check is strict: a misspelt field fails rather than being dropped by the server.
    broken = json.loads(json.dumps(DEPLOYMENT))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"port": 8080}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_everything_lives_in_the_portside_namespace() -> None:
    for obj in BASE + CI_OBJECTS:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert namespace is None, _object_id(obj)
        else:
            assert namespace == NAMESPACE, _object_id(obj)
    assert find(BASE, "Namespace", NAMESPACE)


def test_service_accounts_and_bindings_resolve() -> None:
    accounts = {o["metadata"]["name"] for o in BASE if o["kind"] == "ServiceAccount"}
    for workload in (DEPLOYMENT, DAEMONSET):
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    Policy(BASE)  # raises on a binding to a role that is not there
    Policy(BASE + CI_OBJECTS)


@pytest.mark.parametrize("workload", [DEPLOYMENT, DAEMONSET], ids=["reconciler", "speaker"])
def test_selectors_match_their_pods(workload: Obj) -> None:
    selector = workload["spec"]["selector"]["matchLabels"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_both_programs_use_one_image() -> None:
    assert container(DEPLOYMENT)["image"] == container(DAEMONSET)["image"]


# -- the arguments are the CLI's -------------------------------------------------------------------


def expanded_args(workload: Obj) -> list[str]:
    """The container's args after Kubernetes' $(VAR) expansion, with the values the env gives."""
    spec = container(workload)
    values: dict[str, str] = {}
    for entry in spec.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
            continue
        source = entry["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[entry["name"]] = find(BASE, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "fieldRef" in source:
            downward = {"metadata.name": "pod-0", "metadata.namespace": NAMESPACE,
                        "spec.nodeName": "node-a", "status.podIP": "10.244.0.7"}
            values[entry["name"]] = downward[source["fieldRef"]["fieldPath"]]

    def expand(arg: str) -> str:
        def value(match: re.Match[str]) -> str:
            assert match.group(1) in values, f"{arg}: $({match.group(1)}) is not set in env"
            return values[match.group(1)]

        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, arg)

    return [expand(arg) for arg in spec.get("command", []) + spec["args"]]


def parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parse argv with portside's own parser, as `portside ARGV` would."""
    monkeypatch.setattr(sys, "argv", ["portside", *argv])
    return build_parser().parse_args(argv)


@pytest.fixture
def reconciler_args(monkeypatch: pytest.MonkeyPatch) -> Any:
    return parse(expanded_args(DEPLOYMENT), monkeypatch)


@pytest.fixture
def speaker_args(monkeypatch: pytest.MonkeyPatch) -> Any:
    return parse(expanded_args(DAEMONSET), monkeypatch)


def test_reconciler_args_parse(reconciler_args: Any) -> None:
    assert reconciler_args.command == "run"
    assert reconciler_args.in_cluster
    assert reconciler_args.namespace == NAMESPACE
    assert reconciler_args.source.startswith("https://")


def test_speaker_args_parse(speaker_args: Any) -> None:
    assert speaker_args.command == "speaker"
    assert speaker_args.node == "node-a"
    assert speaker_args.namespace == NAMESPACE
    # In a pod the speaker reads the ConfigMap through the in-cluster config: no file, no kubeconfig.
    assert speaker_args.announcements is None and speaker_args.kubeconfig is None


def mounted_secret(workload: Obj, path: Path) -> tuple[str, str]:
    """(Secret name, key) of the file at `path` in the workload's container."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container(workload).get("volumeMounts", []):
        if path.parent == Path(mount["mountPath"]):
            secret = volumes[mount["name"]]["secret"]
            assert not secret.get("optional"), "the flag fails on a missing file: the Secret must be required"
            return secret["secretName"], path.name
    raise AssertionError(f"{path} is not in any mounted volume")


def test_secret_files_are_where_the_flags_point(reconciler_args: Any, speaker_args: Any) -> None:
    assert mounted_secret(DEPLOYMENT, reconciler_args.webhook_secret_file) == ("portside-webhook", "secret")
    assert mounted_secret(DAEMONSET, speaker_args.heartbeat_key_file) == ("portside-heartbeat", "key")


def secret_env(workload: Obj) -> dict[str, tuple[str, str, bool]]:
    refs = {}
    for entry in container(workload).get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs[entry["name"]] = (ref["name"], ref["key"], bool(ref.get("optional")))
    return refs


def test_secrets_in_the_environment_are_optional_and_named() -> None:
    # Only remote tunnels need the Cloudflare token, only private HTTPS repos the git token.
    assert secret_env(DEPLOYMENT) == {
        "CLOUDFLARE_API_TOKEN": ("portside-cloudflare", "token", True),
        "PORTSIDE_GIT_TOKEN": ("portside-git", "token", True),
    }
    assert secret_env(DAEMONSET) == {}


def listen_port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


@pytest.mark.parametrize(("workload", "name"), [(DEPLOYMENT, "reconciler"), (DAEMONSET, "speaker")],
                         ids=["reconciler", "speaker"])
def test_ports_and_probes_follow_listen(workload: Obj, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(expanded_args(workload), monkeypatch)
    spec = container(workload)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in spec:
            assert ports[spec[probe]["httpGet"]["port"]] == listen_port(args.listen), probe
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_reconciler_is_highly_available() -> None:
    spec = DEPLOYMENT["spec"]
    assert spec["replicas"] == 2
    assert container(DEPLOYMENT)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    budget = find(BASE, "PodDisruptionBudget", "portside-reconciler")
    assert budget["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    service = find(BASE, "Service", "portside-reconciler")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_the_speaker_heartbeat_port_is_the_tables_default() -> None:
    ports = {p["name"]: p for p in container(DAEMONSET)["ports"]}
    assert ports["heartbeat"] == {"name": "heartbeat", "containerPort": DEFAULT_HEARTBEAT.port, "protocol": "UDP"}


@pytest.mark.parametrize("workload", [DEPLOYMENT, DAEMONSET], ids=["reconciler", "speaker"])
def test_resources_are_bounded(workload: Obj) -> None:
    resources = container(workload)["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


# -- security ------------------------------------------------------------------------------------


def restricted_violations(pod: Obj) -> list[str]:
    """What keeps a pod spec from the "restricted" Pod Security Standard (the checks that apply)."""
    found = [f"{field}: true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    pod_context = pod.get("securityContext", {})
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    for c in pod["containers"]:
        context = {**pod_context, **c.get("securityContext", {})}
        if context.get("privileged"):
            found.append(f"{c['name']}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{c['name']}: allowPrivilegeEscalation is not false")
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") == 0:
            found.append(f"{c['name']}: may run as root")
        capabilities = c.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{c['name']}: does not drop ALL capabilities")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{c['name']}: adds {capabilities['add']}")
        if context.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{c['name']}: no seccomp profile")
    return found


def test_the_reconciler_meets_the_restricted_pod_security_standard() -> None:
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert container(DEPLOYMENT)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_checker_sees_what_restricted_forbids() -> None:
    assert restricted_violations(DAEMONSET["spec"]["template"]["spec"]) == [
        "hostNetwork: true", "speaker: may run as root", "speaker: adds ['NET_RAW', 'SYS_NICE']"]


def test_the_speaker_has_host_network_net_raw_and_sys_nice_only() -> None:
    pod = DAEMONSET["spec"]["template"]["spec"]
    context = container(DAEMONSET)["securityContext"]
    assert pod["hostNetwork"] is True
    # NET_RAW for ARP; SYS_NICE for the real-time priority of the answering thread.
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "SYS_NICE"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert not context.get("privileged")
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    tolerated = {(t["key"], t.get("effect")) for t in pod["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated


def test_the_namespace_admits_the_speaker() -> None:
    # hostNetwork is only admitted at the privileged level; restricted or baseline would reject it.
    labels = find(BASE, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_speaker_reads_the_announcement_configmap_only() -> None:
    roles = [o for o in BASE if o["kind"] in ("Role", "ClusterRole") and o["metadata"]["name"] == "portside-speaker"]
    assert [r["kind"] for r in roles] == ["Role"]
    assert roles[0]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                  "resourceNames": [CONFIGMAP_NAME], "verbs": ["list", "watch"]}]


def test_the_ci_account_cannot_write() -> None:
    for obj in CI_OBJECTS:
        for rule in obj.get("rules", []):
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


# -- the CI workflow example -------------------------------------------------------------------------


def workflow_commands() -> Iterator[list[str]]:
    """Every `portside ...` command line in the workflow's run steps (continuations joined)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                words = shlex.split(line, comments=True)
                while "portside" in words:
                    words = words[words.index("portside") + 1:]
                    end = next((i for i, w in enumerate(words) if w in ("|", "||", "&&", ";", ">", "2>")), None)
                    yield words[:end]


def test_the_ci_workflow_runs_validate_and_diff() -> None:
    commands = list(workflow_commands())
    assert any(c[:1] == ["validate"] for c in commands)
    diffs = [c for c in commands if c[:1] == ["diff"]]
    assert diffs
    for diff in diffs:
        assert "--exit-code" in diff
        assert diff[diff.index("--format") + 1] == "markdown"


def test_the_ci_workflow_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    for words in workflow_commands():
        # Shell variables stand for paths here.
        argv = [re.sub(r"\$\{?\w+\}?", "x", w) for w in words]
        parse(argv, monkeypatch)


def test_the_ci_workflow_treats_exit_2_as_changes() -> None:
    text = WORKFLOW.read_text()
    assert re.search(r"\b2\)", text) or "-eq 2" in text or "== 2" in text
    workflow = yaml.safe_load(text)
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in on


def workflow_step(name: str) -> str:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("name") == name]
    assert len(steps) == 1, name
    return str(steps[0]["run"])


def run_step(name: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one of the workflow's steps with bash, as the runner would, with the real portside."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "portside"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m reconciler "$@"\n')
    shim.chmod(0o755)
    runner = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RUNNER_TEMP": str(tmp_path / "runner"),
              "GITHUB_OUTPUT": str(tmp_path / "github-output"), "HOME": str(tmp_path), **env}
    (tmp_path / "runner").mkdir(exist_ok=True)
    return subprocess.run(["bash", "-e", "-c", workflow_step(name)], cwd=tmp_path, env=runner,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_ci_workflow_steps_run(fake_kube: Any, tmp_path: Path) -> None:
    from tests.conftest import write_repo

    fake_kube.put_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "blog"},
                          "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    write_repo(tmp_path / "portside", {"pool.yaml": """
        apiVersion: portside.io/v1alpha1
        kind: IPAddressPool
        metadata: {name: lan}
        spec: {addresses: [10.9.0.10-10.9.0.20]}
    """})
    env = {"PORTSIDE_PATH": "portside",
           "KUBECONFIG_DATA": fake_kube.write_kubeconfig(tmp_path / "kc").read_text()}
    for step in ("Validate", "Read the live state"):
        result = run_step(step, tmp_path, env)
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "runner" / "kubeconfig").exists(), "the kubeconfig is left on the runner"

    plan = run_step("Plan", tmp_path, env)
    assert plan.returncode == 0, plan.stderr  # exit 2 (changes) does not fail the job
    assert (tmp_path / "github-output").read_text() == "changes=true\n"
    assert "10.9.0.10" in (tmp_path / "runner" / "plan.md").read_text()

    (tmp_path / "portside" / "pool.yaml").write_text("apiVersion: portside.io/v1alpha1\nkind: Nope\n")
    broken = run_step("Plan", tmp_path, env)
    assert broken.returncode == 1
    assert "::error::portside diff failed (exit 1)" in broken.stdout


def test_the_deployment_runs_as_the_images_user() -> None:
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert len(users) == 1, "the Dockerfile should set one numeric USER uid:gid"
    pod_context = DEPLOYMENT["spec"]["template"]["spec"]["securityContext"]
    assert (str(pod_context["runAsUser"]), str(pod_context["runAsGroup"])) == users[0]
