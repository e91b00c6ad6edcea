"""Deployment files: compose and Kubernetes against their schemas, provisioning against the
files it names, systemd units through systemd-analyze, configs through lingtan's own loader.

The schemas are the ones shipped in packages, so this runs offline: the Compose Specification
schema vendored by check-jsonschema, the Kubernetes OpenAPI-derived schemas (strict: unknown
fields fail) shipped by kubernetes-validate.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lingtan.config import load, parse
from lingtan.grafana.dashboards import BUILDERS, DATASOURCE_UID

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S_VERSION = "1.30"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def compose_errors(doc: dict[str, Any]) -> list[str]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_is_valid_compose() -> None:
    assert compose_errors(compose()) == []
    broken = compose()
    broken["services"]["grafana"]["restart_policy"] = "always"  # not a compose key
    assert compose_errors(broken)


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to compose.yaml) or volume name."""
    out = {}
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        out[dst] = src
    return out


def test_compose_stack_uses_the_shipped_broker_config_and_keeps_data() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"mosquitto", "influxdb", "grafana", "ingest", "rules", "dashboards"}
    mqtt = _mounts(services["mosquitto"])
    assert mqtt["/etc/mosquitto/mosquitto.conf"] == "../mosquitto/mosquitto.conf"
    assert mqtt["/etc/mosquitto/acl"] == "./local/acl"
    setup = (DEPLOY / "compose" / "setup.sh").read_text()
    assert "cp ../mosquitto/acl local/acl" in setup  # the shipped ACL, copied once
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for path in re.findall(r"^(?:password_file|acl_file|cafile|certfile|keyfile) (\S+)$", conf,
                           re.MULTILINE):
        assert any(path.startswith(dst) for dst in mqtt), f"{path} is not mounted"
    persist = re.search(r"^persistence_location (\S+?)/?$", conf, re.MULTILINE)
    assert persist is not None
    assert mqtt[persist.group(1)] in doc["volumes"]
    # ingest and rules reach the broker's 127.0.0.1 listener through its network namespace
    assert "listener 1883 127.0.0.1" in conf
    for name in ("ingest", "rules"):
        assert services[name]["network_mode"] == "service:mosquitto"
        assert services[name]["restart"] == "unless-stopped"
        assert _mounts(services[name])["/var/lib/lingtan"] in doc["volumes"]
    for name in ("mosquitto", "influxdb", "grafana", "ingest", "rules"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert _mounts(services["influxdb"])["/var/lib/influxdb2"] in doc["volumes"]
    assert _mounts(services["grafana"])["/var/lib/grafana"] in doc["volumes"]


def test_compose_configs_load_and_point_at_the_stack() -> None:
    doc = compose()
    ingest = load(DEPLOY / "compose" / "config" / "ingest.yaml").config
    rules = load(DEPLOY / "compose" / "config" / "site.yaml").config
    assert ingest.broker.username == "lingtan-ingest"
    assert rules.broker.username == "lingtan-rules"
    assert ingest.ingest.influxdb is not None
    assert ingest.ingest.influxdb.url == "http://influxdb:8086"
    assert ingest.ingest.metrics_port == 9108
    assert "9108" in " ".join(doc["services"]["ingest"]["healthcheck"]["test"])
    # ledger and state on the services' volumes, secrets from compose secrets
    assert str(rules.rules.ledger).startswith("/var/lib/lingtan/")
    assert str(ingest.ingest.state_path).startswith("/var/lib/lingtan/")
    for cfg, service in ((ingest, "ingest"), (rules, "rules")):
        secret = Path(str(cfg.broker.password_file)).name
        assert secret in doc["services"][service]["secrets"]
    acl = (DEPLOY / "mosquitto" / "acl").read_text()
    assert "user lingtan-ingest" in acl
    assert "user lingtan-rules" in acl


def test_no_secret_is_committed_in_deploy() -> None:
    tracked = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert not [p for p in tracked if "/secrets/" in p or p.endswith((".key", ".password"))]
    doc = compose()
    for name, s in doc["secrets"].items():
        assert s["file"].startswith("./secrets/"), name
    assert "secrets/" in (DEPLOY / "compose" / ".gitignore").read_text()
    for path in DEPLOY.rglob("*.y*ml"):
        text = path.read_text()
        # a password or token as a plain value (not a *_file, *_env or a reference)
        assert not re.search(r"^\s*-?\s*(password|token|api_key)\s*:\s*[^\s{\[#]", text,
                             re.MULTILINE | re.IGNORECASE), f"{path}: a secret written inline"
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), f"{path}: a Secret"


def test_grafana_provisioning_parses_and_names_what_exists() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    [ds] = yaml.safe_load((prov / "datasources" / "lingtan.yaml").read_text())["datasources"]
    assert ds["uid"] == DATASOURCE_UID
    assert ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL"
    token_file = re.fullmatch(r"Token \$__file\{(.+)\}", ds["secureJsonData"]["httpHeaderValue1"])
    assert token_file is not None
    [provider] = yaml.safe_load((prov / "dashboards" / "lingtan.yaml").read_text())["providers"]
    path = provider["options"]["path"]

    # in the compose stack: the provisioning folders are mounted where Grafana reads them,
    # the token file is a secret Grafana gets, and the dashboards folder is written by the
    # dashboards service before Grafana starts
    services = compose()["services"]
    grafana = _mounts(services["grafana"])
    for sub in ("datasources", "dashboards"):
        host = grafana[f"/etc/grafana/provisioning/{sub}"]
        assert (COMPOSE.parent / host / "lingtan.yaml").is_file()
    assert token_file.group(1) == "/run/secrets/influxdb-token"
    assert "influxdb-token" in services["grafana"]["secrets"]
    for var in re.findall(r"\$\{(\w+)\}", (prov / "datasources" / "lingtan.yaml").read_text()):
        assert var in services["grafana"]["environment"], var
    mount = next(dst for dst in grafana if path.startswith(dst))
    generator = services["dashboards"]
    out = generator["command"][generator["command"].index("-o") + 1]
    assert out == path
    assert _mounts(generator)[mount] == grafana[mount]
    assert services["grafana"]["depends_on"]["dashboards"]["condition"] == (
        "service_completed_successfully")
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path)
    assert Path(home).name in dict(BUILDERS)
    # outside compose, the generic dashboards are the committed files
    for filename, _ in BUILDERS:
        assert (DEPLOY / "grafana" / "dashboards" / filename).is_file()


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


@pytest.mark.parametrize(("name", "doc"), k8s_documents(),
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}"
                              for n, d in k8s_documents()])
def test_k8s_manifest_is_valid(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validation_catches_a_wrong_field() -> None:
    _, sts = next((n, d) for n, d in k8s_documents() if d["metadata"]["name"] == "ingest")
    broken = copy.deepcopy(sts)
    broken["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_k8s_kustomization_and_configs_fit_the_manifests() -> None:
    k8s = DEPLOY / "k8s"
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    for r in kust["resources"]:
        assert (k8s / r).is_file(), r
    maps = {}
    for gen in kust["configMapGenerator"]:
        for f in gen["files"]:
            key, src = f.split("=")
            assert (k8s / src).is_file(), src
            maps[gen["name"]] = (key, k8s / src)
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in k8s_documents())
    ingest = docs[("StatefulSet", "ingest")]["spec"]
    assert ingest["replicas"] > 1
    key, src = maps["lingtan-ingest"]
    text = src.read_text().replace("__POD_NAME__", "ingest-0")
    cfg = parse(text, src).config
    assert cfg.ingest.share_group is not None, "ingest scales out over a shared subscription"
    assert "ingest-0" in cfg.ingest.client_id
    assert cfg.broker.protocol == "5"
    # rules: one StatefulSet of one per site, its config naming that site
    rules = [d for (kind, _), d in docs.items()
             if kind == "StatefulSet" and d["metadata"]["name"].startswith("rules-")]
    assert rules
    for sts in rules:
        site = sts["metadata"]["labels"]["lingtan/site"]
        assert sts["spec"]["replicas"] == 1
        key, src = maps[f"lingtan-rules-{site}"]
        assert parse(src.read_text(), src).config.site.id == site
    emqx = docs[("StatefulSet", "emqx")]["spec"]["template"]["spec"]["containers"][0]["env"]
    env = {e["name"]: e.get("value") for e in emqx}
    assert env["EMQX_MQTT__MAX_MQUEUE_LEN"] == "infinity"  # no QoS 1 drops for a slow consumer
    assert env["EMQX_ALLOW_ANONYMOUS"] == "false"


def test_edge_config_example_loads() -> None:
    cfg = load(DEPLOY / "edge" / "site.example.yaml").config
    assert str(cfg.edge.state_dir).startswith("/var/lib/lingtan/")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    units = sorted((DEPLOY / "edge").glob("*.service"))
    assert [u.name for u in units] == ["lingtan-edge.service", "lingtan-ingest.service",
                                       "lingtan-rules.service"]
    lingtan = shutil.which("lingtan") or str(Path(__import__("sys").executable).parent / "lingtan")

    def verify(text: str, name: str) -> subprocess.CompletedProcess[str]:
        # the installed path does not exist here: point ExecStart at this environment's lingtan
        path = tmp_path / name
        path.write_text(text.replace("/opt/lingtan/venv/bin/lingtan", lingtan))
        return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                              text=True, timeout=60, check=False)

    for unit in units:
        text = unit.read_text()
        out = verify(text, unit.name)
        assert out.returncode == 0, f"{unit.name}: {out.stderr}"
        assert out.stderr.strip() == "", f"{unit.name}: {out.stderr}"
        assert "Restart=always" in text
        assert "StateDirectory=lingtan" in text
        assert "WantedBy=multi-user.target" in text
    bad = verify(units[0].read_text().replace("Restart=always", "Restart=sometimes"), "b.service")
    assert "Failed to parse service restart specifier" in bad.stderr


def test_scripts_parse() -> None:
    for script in (DEPLOY / "edge" / "install.sh", DEPLOY / "compose" / "setup.sh",
                   DEPLOY / "compose" / "influxdb-init" / "dbrp.sh"):
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
