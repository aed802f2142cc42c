"""Where the speaker gets its announcement table: a file (local mode) or the ConfigMap.

Each source runs in its own thread and hands every new, valid table to ``deliver``. A table
that does not parse is reported to ``failed`` and otherwise ignored: the speaker keeps
answering from the last good table, as MetalLB keeps its last good configuration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from reconciler.common.errors import PortsideError, StateError, UsageError
from reconciler.planning.announcement_table import (
    CONFIGMAP_NAME,
    AnnouncementTable,
    decode_table,
    table_from_configmap,
)

log = logging.getLogger(__name__)

Deliver = Callable[[AnnouncementTable], None]
Failed = Callable[[str], None]
DEFAULT_NAMESPACE = "portside-system"


class TableSource(Protocol):
    description: str

    def run(self, deliver: Deliver, failed: Failed, stop: threading.Event) -> None:
        """Deliver tables until ``stop`` is set (runs in its own thread)."""


class FileSource:
    """A JSON file, re-read whenever anything in its directory changes.

    Watching the directory, not the file, follows atomic replacement (write + rename) and the
    symlink swap of a ConfigMap volume mount, where the file itself never changes in place.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"
        if not path.parent.is_dir():
            raise UsageError(f"--announcements {path}: directory {path.parent} does not exist")
        self._last_text: str | None = None

    def load(self, deliver: Deliver, failed: Failed) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if self._last_text is None:
                failed(f"{self.path}: does not exist yet; waiting for it")
            return
        except (OSError, UnicodeDecodeError) as exc:
            failed(f"{self.path}: cannot read: {exc}")
            return
        if text == self._last_text:
            return
        self._last_text = text
        try:
            table = decode_table(text, source=str(self.path))
        except StateError as exc:
            failed(str(exc))
            return
        deliver(table)

    def run(self, deliver: Deliver, failed: Failed, stop: threading.Event) -> None:
        import watchfiles

        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every change at INFO
        name = self.path.name

        def relevant(_change: object, changed: str) -> bool:
            # Our file, or the ..data symlink and ..<timestamp> directory of a ConfigMap mount.
            base = Path(changed).name
            return base == name or base.startswith("..")

        self.load(deliver, failed)
        # step/debounce: apply a new table within ~50 ms of the write, not watchfiles' 1.6 s.
        for _changes in watchfiles.watch(self.path.parent, watch_filter=relevant, debounce=400, step=30,
                                         stop_event=stop, recursive=False, rust_timeout=1000,
                                         raise_interrupt=False):
            self.load(deliver, failed)


class ConfigMapSource:
    """The ConfigMap ``portside-announcements``, listed then watched with the official client."""

    RETRY_S = 2.0
    WATCH_TIMEOUT_S = 60

    def __init__(self, kubeconfig: str | None, namespace: str = DEFAULT_NAMESPACE,
                 name: str = CONFIGMAP_NAME) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.name = name
        self.description = f"ConfigMap {namespace}/{name}"
        self._last_version: str | None = None

    def _api(self) -> Any:
        from kubernetes import client
        from kubernetes import config as kube_config

        config: Any = kube_config  # the package has no type hints
        try:
            if self.kubeconfig:
                api_client = config.new_client_from_config(config_file=self.kubeconfig)
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            where = f"kubeconfig {self.kubeconfig}" if self.kubeconfig else "in-cluster configuration"
            raise UsageError(f"cannot load the {where}: {exc}") from exc
        return client.CoreV1Api(api_client)

    def check(self) -> None:
        """Fail early (at startup) when there is no usable client configuration."""
        self._api()

    def _handle(self, configmap: Any, deliver: Deliver, failed: Failed) -> None:
        version = configmap.metadata.resource_version
        if version is not None and version == self._last_version:
            return
        self._last_version = version
        try:
            table = table_from_configmap(configmap.data, configmap.binary_data, source=self.description)
        except StateError as exc:
            failed(str(exc))
            return
        deliver(table)

    def run(self, deliver: Deliver, failed: Failed, stop: threading.Event) -> None:
        from kubernetes import watch as kube_watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        watch: Any = kube_watch  # no type hints
        api = self._api()
        selector = f"metadata.name={self.name}"
        while not stop.is_set():
            try:
                listed = api.list_namespaced_config_map(self.namespace, field_selector=selector)
                if listed.items:
                    self._handle(listed.items[0], deliver, failed)
                else:
                    failed(f"{self.description} does not exist yet; waiting for it")
                watcher = watch.Watch()
                for event in watcher.stream(api.list_namespaced_config_map, self.namespace,
                                            field_selector=selector,
                                            resource_version=listed.metadata.resource_version,
                                            timeout_seconds=self.WATCH_TIMEOUT_S):
                    if stop.is_set():
                        watcher.stop()
                        break
                    kind, obj = event["type"], event["object"]
                    if kind in ("ADDED", "MODIFIED"):
                        self._handle(obj, deliver, failed)
                    elif kind == "DELETED":
                        self._last_version = None
                        failed(f"{self.description} was deleted; keeping the last table")
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again at once
                    continue
                failed(f"{self.description}: API error {exc.status} {exc.reason}")
                stop.wait(self.RETRY_S)
            except (HTTPError, OSError, PortsideError) as exc:
                failed(f"{self.description}: {exc}")
                stop.wait(self.RETRY_S)
