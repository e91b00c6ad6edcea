"""`lingtan grafana push`: folder, data source and dashboards into a running Grafana.

Everything is addressed by uid, so pushing twice changes nothing the second time: the folder
and the data source are created or updated in place, and a dashboard is written only when it
differs from what Grafana holds (Grafana would otherwise add a version on every push).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    TokenAuth,
)
from pydantic import SecretStr

from lingtan.grafana.dashboards import DATASOURCE_UID, Generated

FOLDER_UID = "lingtan"
FOLDER_TITLE = "lingtan"
DATASOURCE_NAME = "lingtan InfluxDB"
# Fields Grafana adds to a stored dashboard; not ours to compare.
_VOLATILE = ("id", "version")


class PushError(Exception):
    """Grafana refused or could not be reached; the message says which step and why."""


@dataclass(frozen=True)
class InfluxSource:
    """Where Grafana's InfluxDB data source points (InfluxQL through the v1 query API)."""

    url: str
    database: str = "lingtan"
    # InfluxDB 2.x and 3 Core: an API token, sent as `Authorization: Token ...`.
    token: SecretStr | None = None
    # InfluxDB 1.x with authentication on.
    user: str | None = None
    password: SecretStr | None = None

    def model(self) -> dict[str, Any]:
        """The data source as Grafana's HTTP API takes it."""
        json_data: dict[str, Any] = {
            "dbName": self.database,
            "httpMode": "POST",
            "version": "InfluxQL",
        }
        secure: dict[str, str] = {}
        if self.token is not None:
            json_data["httpHeaderName1"] = "Authorization"
            secure["httpHeaderValue1"] = f"Token {self.token.get_secret_value()}"
        if self.password is not None:
            secure["password"] = self.password.get_secret_value()
        body: dict[str, Any] = {
            "uid": DATASOURCE_UID,
            "name": DATASOURCE_NAME,
            "type": "influxdb",
            "access": "proxy",
            "url": self.url,
            "database": self.database,
            "jsonData": json_data,
            "secureJsonData": secure,
        }
        if self.user:
            body["user"] = self.user
        return body


@dataclass
class PushReport:
    """What each step did: created, updated or unchanged."""

    folder: str = ""
    datasource: str = "skipped"
    dashboards: dict[str, str] = field(default_factory=dict)


def connect(url: str, token: SecretStr, timeout_s: float = 10.0) -> GrafanaApi:
    """A client for the Grafana at `url` with a service-account token."""
    return GrafanaApi.from_url(
        url, credential=TokenAuth(token.get_secret_value()), timeout=timeout_s
    )


def _not_found(exc: GrafanaException) -> bool:
    return isinstance(exc, GrafanaClientError) and exc.status_code == 404


def push_folder(api: GrafanaApi) -> str:
    """The lingtan folder, created when missing."""
    try:
        found = api.folder.get_folder(FOLDER_UID)
    except GrafanaException as exc:
        if not _not_found(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        return "created"
    if found.get("title") != FOLDER_TITLE:
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        return "updated"
    return "unchanged"


def push_datasource(api: GrafanaApi, source: InfluxSource) -> str:
    """The InfluxDB data source, created or updated by uid."""
    body = source.model()
    try:
        api.datasource.get_datasource_by_uid(DATASOURCE_UID)
    except GrafanaException as exc:
        if not _not_found(exc):
            raise
        try:
            api.datasource.create_datasource(body)
        except GrafanaClientError as conflict:
            if conflict.status_code != 409:
                raise
            raise PushError(_name_taken(api)) from None
        return "created"
    # secrets are write-only in Grafana: what it holds cannot be compared, so always update
    api.datasource.update_datasource_by_uid(DATASOURCE_UID, body)
    return "updated"


def _name_taken(api: GrafanaApi) -> str:
    # Grafana keeps data source names unique: one made by hand (or by provisioning) under our
    # name but another uid blocks ours, and the dashboards query the uid, not the name.
    try:
        other = api.datasource.get_datasource_by_name(DATASOURCE_NAME)
        uid = f"uid {other.get('uid')!r}"
    except GrafanaException:
        uid = "another uid"
    return (
        f"data source: Grafana already has a data source named {DATASOURCE_NAME!r} with {uid}; "
        f"lingtan's dashboards query uid {DATASOURCE_UID!r}. Delete or rename that data source "
        "in Grafana (Connections > Data sources) and push again; it was left as it is"
    )


def _same(stored: dict[str, Any], ours: dict[str, Any]) -> bool:
    a = {k: v for k, v in stored.items() if k not in _VOLATILE}
    b = {k: v for k, v in ours.items() if k not in _VOLATILE}
    return a == b


def push_dashboard(api: GrafanaApi, g: Generated) -> str:
    """One dashboard into the lingtan folder, written only when it changed."""
    state = "created"
    try:
        stored = api.dashboard.get_dashboard(g.uid)
    except GrafanaException as exc:
        if not _not_found(exc):
            raise
    else:
        meta = stored.get("meta", {})
        if meta.get("folderUid") == FOLDER_UID and _same(stored.get("dashboard", {}), g.model):
            return "unchanged"
        state = "updated"
    body = {
        "dashboard": {**g.model, "id": None},
        "folderUid": FOLDER_UID,
        "overwrite": True,
        "message": "lingtan grafana push",
    }
    api.dashboard.update_dashboard(body)
    return state


def push(api: GrafanaApi, dashboards: list[Generated], source: InfluxSource | None) -> PushReport:
    """Folder, then the data source (when given), then every dashboard."""
    report = PushReport()
    step = "folder"
    try:
        report.folder = push_folder(api)
        if source is not None:
            step = "data source"
            report.datasource = push_datasource(api, source)
        for g in dashboards:
            step = f"dashboard {g.uid}"
            report.dashboards[g.uid] = push_dashboard(api, g)
    except GrafanaException as exc:
        # Grafana's own words ("Invalid API key", "Access denied..."); never the request body
        raise PushError(f"{step}: Grafana answered {exc.status_code}: {exc.message}") from None
    except requests.RequestException as exc:
        raise PushError(f"{step}: cannot reach Grafana: {type(exc).__name__}: {exc}") from None
    return report
