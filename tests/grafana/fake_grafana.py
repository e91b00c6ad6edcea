"""A local HTTP server with the few Grafana HTTP API endpoints `lingtan grafana push` uses.

Only because Grafana itself cannot be installed here: Debian has no `grafana` package
(`apt-cache policy grafana`: no candidate), Grafana's own apt repository and container images
are out of reach, and no Docker daemon runs. The endpoints behave as Grafana 11's do for what
push relies on: service-account tokens as `Authorization: Bearer`, 401 with a JSON message for
a bad token, 404 for a missing uid, folders and data sources by uid, dashboards saved through
POST /api/dashboards/db (overwrite by uid, the stored JSON gains id and version, the version
goes up on every save), and GET /api/dashboards/uid/{uid} returning {dashboard, meta}.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class GrafanaState:
    """What the fake Grafana holds, and every request it saw."""

    token: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid: {dashboard, meta}
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def writes(self) -> list[tuple[str, str]]:
        """Requests that changed something."""
        return [r for r in self.requests if r[0] != "GET"]


class _Handler(BaseHTTPRequestHandler):
    state: GrafanaState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        return dict(json.loads(self.rfile.read(n) or b"{}"))

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.state.token}":
            return True
        self._send(401, {"message": "Invalid API key", "traceID": ""})
        return False

    def _route(self, method: str) -> None:
        s = self.state
        with s.lock:
            s.requests.append((method, self.path))
            if not self._authorised():
                return
            parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
            body = self._body() if method in ("POST", "PUT") else {}
            match (method, parts):
                case ("GET", ["api", "folders", uid]):
                    f = s.folders.get(uid)
                    self._send(200, f) if f else self._send(404, {"message": "folder not found"})
                case ("POST", ["api", "folders"]):
                    uid = body.get("uid") or f"f{s.next_id}"
                    if uid in s.folders:
                        self._send(409, {"message": "a folder with the same uid already exists"})
                        return
                    s.folders[uid] = {"id": s.next_id, "uid": uid, "title": body["title"],
                                      "version": 1}
                    s.next_id += 1
                    self._send(200, s.folders[uid])
                case ("PUT", ["api", "folders", uid]):
                    if uid not in s.folders:
                        self._send(404, {"message": "folder not found"})
                        return
                    s.folders[uid]["title"] = body.get("title", s.folders[uid]["title"])
                    s.folders[uid]["version"] += 1
                    self._send(200, s.folders[uid])
                case ("GET", ["api", "datasources", "uid", uid]):
                    ds = s.datasources.get(uid)
                    if ds is None:
                        self._send(404, {"message": "Data source not found"})
                        return
                    # secrets are write-only: Grafana says which are set, never their values
                    shown = {k: v for k, v in ds.items() if k != "secureJsonData"}
                    shown["secureJsonFields"] = {k: True for k in ds.get("secureJsonData", {})}
                    self._send(200, shown)
                case ("GET", ["api", "datasources", "name", name]):
                    named = [d for d in s.datasources.values() if d["name"] == name]
                    if not named:
                        self._send(404, {"message": "Data source not found"})
                        return
                    self._send(200, {k: v for k, v in named[0].items() if k != "secureJsonData"})
                case ("POST", ["api", "datasources"]):
                    uid = body["uid"]
                    if uid in s.datasources or any(
                        d["name"] == body["name"] for d in s.datasources.values()
                    ):
                        # the 409 and text Grafana answers to a name it already has
                        self._send(
                            409, {"message": "data source with the same name already exists"}
                        )
                        return
                    s.datasources[uid] = body | {"id": s.next_id, "version": 1}
                    s.next_id += 1
                    self._send(200, {"message": "Datasource added", "id": s.datasources[uid]["id"]})
                case ("PUT", ["api", "datasources", "uid", uid]):
                    if uid not in s.datasources:
                        self._send(404, {"message": "Data source not found"})
                        return
                    old = s.datasources[uid]
                    s.datasources[uid] = body | {"id": old["id"], "version": old["version"] + 1}
                    self._send(200, {"message": "Datasource updated"})
                case ("GET", ["api", "dashboards", "uid", uid]):
                    d = s.dashboards.get(uid)
                    self._send(200, d) if d else self._send(404, {"message": "Dashboard not found"})
                case ("POST", ["api", "dashboards", "db"]):
                    self._save_dashboard(body)
                case _:
                    self._send(404, {"message": "Not found"})

    def _save_dashboard(self, body: dict[str, Any]) -> None:
        s = self.state
        dash = dict(body["dashboard"])
        uid = dash.get("uid")
        folder = body.get("folderUid")
        if folder and folder not in s.folders:
            self._send(400, {"message": "folder not found", "status": "folder-not-found"})
            return
        old = s.dashboards.get(uid) if uid else None
        if old is not None and not body.get("overwrite"):
            self._send(412, {"message": "A dashboard with the same uid already exists",
                             "status": "name-exists"})
            return
        dash["id"] = old["dashboard"]["id"] if old else s.next_id
        dash["version"] = old["dashboard"]["version"] + 1 if old else 1
        s.next_id += 1
        s.dashboards[uid] = {"dashboard": dash, "meta": {"folderUid": folder or "",
                                                         "provisioned": False}}
        self._send(200, {"id": dash["id"], "uid": uid, "status": "success",
                         "version": dash["version"], "url": f"/d/{uid}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")


@contextmanager
def fake_grafana(token: str) -> Iterator[tuple[str, GrafanaState]]:
    """(base URL, state) of a fake Grafana on a free loopback port."""
    state = GrafanaState(token)
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-grafana", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
