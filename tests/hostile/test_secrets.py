"""Secrets from the config never show: not in logs (at debug level), error messages, dead letters,
alert events or anything else published on the broker.

Each secret is distinctive, so finding it anywhere is a leak. The processes are the real ones an
operator runs (`lingtan edge`, `ingest`, `rules`, `alerts test`), against real servers that
refuse them: Mosquitto with a password file, VictoriaMetrics with HTTP authentication (401), an
SMTP server that refuses the login, a webhook that answers 500 to a URL carrying its token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from telemetry import topics
from telemetry.config import BrokerConfig
from telemetry.sample import Sample, encode
from telemetry.timeutil import now_ms
from tests.mqtt_helpers import Collector, collect, publish
from tests.rules.alerts.servers import http_server
from tests.servers import free_port, lingtan_process, mosquitto, victoria_metrics, wait_until

pytestmark = pytest.mark.integration

SITE = "s1"
USER = "lingtan"
BROKER_PW = "brk-Pw-7f3a91c2e5d0"
WRONG_BROKER_PW = "brk-Wrong-c41e0b9a77"
INFLUX_TOKEN = "ifx-Tok-4b8d2e6a1c93"
SMTP_USER = "plant-mailer"
SMTP_PW = "smtp-Pw-9e1c3a7b55f2"
HOOK_TOKEN = "hookTok2d5f8a0b3e71"
HOOK_KEY = "hookKey8c1e6b2a94d0"
SECRETS = (BROKER_PW, WRONG_BROKER_PW, INFLUX_TOKEN, SMTP_PW, HOOK_TOKEN, HOOK_KEY)


def assert_no_secret(where: str, texts: Iterable[str | bytes]) -> None:
    for text in texts:
        s = text.decode(errors="replace") if isinstance(text, bytes) else text
        for secret in SECRETS:
            at = max(0, s.find(secret) - 200)
            assert secret not in s, f"{where} shows a secret: ...{s[at:at + 400]}"


def site_yaml(tmp: Path, broker_port: int, *, influx_url: str = "http://127.0.0.1:9",
              extra: str = "") -> Path:
    (tmp / "broker.pw").write_text(WRONG_BROKER_PW + "\n")
    path = tmp / "site.yaml"
    path.write_text(f"""
site: {{id: {SITE}, timezone: Asia/Shanghai, region: CN-HB}}
broker:
  url: "mqtt://127.0.0.1:{broker_port}"
  username: {USER}
  password_env: LT_SECRET_BROKER_PW
edge:
  agent_id: edge-s
  state_dir: state/edge
  devices:
    - id: grid-main
      profile: eastron-sdm630
      transport: {{host: 127.0.0.1, port: {free_port()}}}
ingest:
  client_id: s-ingest
  batch_wait_s: 0.2
  sqlite: {{path: state/ts.sqlite}}
  influxdb: {{url: "{influx_url}", token_env: LT_SECRET_INFLUX_TOKEN, timeout_s: 2}}
rules:
  client_id: s-rules
  ledger: state/ledger.sqlite
  derived_every_s: 0.5
  meters: [{{device: grid-main, role: grid_import}}]
{extra}""")
    return path


@contextmanager
def running(command: str, cfg: Path, env: dict[str, str]) -> Iterator[Path]:
    """`lingtan --log-level debug <command>` until the block ends; yields its log file."""
    log = cfg.parent / f"{command}.log"
    with lingtan_process(command, cfg, log, env=env, log_level="debug"):
        yield log


def test_a_broker_refusing_the_password_is_reported_without_it(tmp_path: Path) -> None:
    with mosquitto(tmp_path, users={USER: BROKER_PW}) as broker:
        cfg = site_yaml(tmp_path, broker.port)
        env = {"LT_SECRET_BROKER_PW": WRONG_BROKER_PW, "LT_SECRET_INFLUX_TOKEN": INFLUX_TOKEN}
        with running("edge", cfg, env) as edge, running("ingest", cfg, env) as ingest, \
                running("rules", cfg, env) as rules:
            logs = {"edge": edge, "ingest": ingest, "rules": rules}
            for name, log in logs.items():
                wait_until(lambda log=log: "not authori" in log.read_text().lower(), 30,
                           f"{name} to report that the broker refused it")
        texts = {name: log.read_text() for name, log in logs.items()}
    for name, text in texts.items():
        assert_no_secret(f"lingtan {name}'s log", [text])
    print({name: len(t.splitlines()) for name, t in texts.items()}, "log lines checked")


def test_ingest_refused_by_the_database_and_dead_letters_show_no_secret(tmp_path: Path) -> None:
    with mosquitto(tmp_path, users={USER: BROKER_PW}) as broker, \
            victoria_metrics(tmp_path, basic_auth=("vm-user", "vm-pass-not-ours")) as vm:
        cfg = site_yaml(tmp_path, broker.port, influx_url=vm.url)
        login = BrokerConfig(url=f"mqtt://127.0.0.1:{broker.port}", username=USER,
                             password_env="LT_SECRET_BROKER_PW")
        env = {"LT_SECRET_BROKER_PW": BROKER_PW, "LT_SECRET_INFLUX_TOKEN": INFLUX_TOKEN}
        os.environ["LT_SECRET_BROKER_PW"] = BROKER_PW  # for this test's own client
        try:
            with collect(login, "#") as everything, running("ingest", cfg, env) as log:
                wait_until(lambda: "connected to" in log.read_text(), 30, "ingest to connect")
                publish(login, [(topics.sample(SITE, "grid-main"),
                                 b'{"site": "s1", "seq": "not a number"')])
                wait_until(lambda: _dead_letters(everything), 30, "the bad payload dead-lettered")
                good = Sample(site=SITE, device="grid-main", seq=0, ts=now_ms(),
                              values={"active_power_kw": 12.5})
                publish(login, [(topics.sample(SITE, "grid-main"), encode(good))])
                wait_until(lambda: "401" in log.read_text(), 30, "the database to refuse ingest")
                text = log.read_text()
        finally:
            del os.environ["LT_SECRET_BROKER_PW"]
    letters = _dead_letters(everything)
    assert "not a number" in letters[0]["payload"], letters  # the payload, whole, with a reason
    assert "write failed" in text
    assert "the token was refused" in text  # where to look, without what the token is
    assert_no_secret("lingtan ingest's log", [text])
    assert_no_secret("a message on the broker", everything.payloads())
    print(f"checked {len(text.splitlines())} log lines, {len(everything.payloads())} messages "
          f"on the broker, {len(letters)} dead letter(s)")


def _dead_letters(col: Collector) -> list[dict[str, Any]]:
    with col.lock:
        return [orjson.loads(p) for t, p in col.messages if t == topics.deadletter(SITE)]


class _RefuseLogin:
    """An SMTP authenticator that refuses every login, as a server with a changed password."""

    def __init__(self) -> None:
        self.tried: list[tuple[str, str]] = []

    def __call__(self, _server: Any, _session: Any, _envelope: Any, mechanism: str,
                 data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.tried.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=False, handled=False)


class _Sink:
    async def handle_DATA(self, *_a: Any) -> str:
        return "250 OK"


@contextmanager
def smtp_refusing_login() -> Iterator[tuple[int, _RefuseLogin]]:
    auth = _RefuseLogin()
    port = free_port()
    ctl = Controller(_Sink(), hostname="127.0.0.1", port=port, authenticator=auth,
                     auth_require_tls=False, auth_required=True)
    ctl.start()
    try:
        yield port, auth
    finally:
        ctl.stop()


ALERTS = """\
alerts:
  state: state/alerts.sqlite
  defaults: {meter_offline: false, data_gap: false}
  rules:
    - {name: grid-high, kind: threshold, device: grid-main, quantity: active_power_kw,
       above: 100, clear_below: 90}
  channels:
    mail: {url_file: mail.url, timeout_s: 5}
    hook: {url_env: LT_SECRET_HOOK, timeout_s: 5}
"""


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_alert_channels_that_fail_show_no_secret(tmp_path: Path) -> None:
    with mosquitto(tmp_path, users={USER: BROKER_PW}) as broker, \
            smtp_refusing_login() as (smtp_port, auth), http_server(fail_first=10_000) as hook:
        cfg = site_yaml(tmp_path, broker.port, extra=ALERTS)
        (tmp_path / "mail.url").write_text(
            f"mailto://{SMTP_USER}:{SMTP_PW}@127.0.0.1:{smtp_port}"
            f"?from=lingtan@example.com&to=energy@example.com&mode=insecure\n")
        env = {"LT_SECRET_BROKER_PW": BROKER_PW, "LT_SECRET_INFLUX_TOKEN": INFLUX_TOKEN,
               "LT_SECRET_HOOK": hook.url(path=f"/hook/{HOOK_TOKEN}") + f"?key={HOOK_KEY}"}

        # 1. `lingtan alerts test`: both channels fail, and say why, without their secrets
        out = subprocess.run(
            [sys.executable, "-m", "lingtan", "--log-level", "debug", "alerts", "test",
             "-c", str(cfg)], capture_output=True, text=True, timeout=120,
            env=os.environ | env, check=False)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "mail: FAILED" in out.stdout, out.stdout
        assert "hook: FAILED" in out.stdout, out.stdout
        assert "500" in out.stdout
        assert auth.tried[:1] == [(SMTP_USER, SMTP_PW)]  # it did try to log in
        assert HOOK_TOKEN in hook.seen()[0].path  # and the webhook got its token
        assert_no_secret("`lingtan alerts test`", [out.stdout, out.stderr])

        # 2. live: rules fires an alert; both channels fail and are retried
        login = BrokerConfig(url=f"mqtt://127.0.0.1:{broker.port}", username=USER,
                             password_env="LT_SECRET_BROKER_PW")
        os.environ["LT_SECRET_BROKER_PW"] = BROKER_PW
        try:
            with collect(login, "#") as everything, running("rules", cfg, env) as log:
                wait_until(lambda: "connected to" in log.read_text(), 30, "rules to connect")
                tried = len(hook.seen())
                publish(login, [(topics.sample(SITE, "grid-main"), encode(
                    Sample(site=SITE, device="grid-main", seq=i, ts=now_ms() + i,
                           values={"active_power_kw": 150.0}))) for i in range(3)])
                wait_until(lambda: any(t == topics.alert(SITE) for t, _ in everything.messages),
                           30, "the alert event on the broker")
                wait_until(lambda: len(hook.seen()) >= tried + 2 and len(auth.tried) >= 3, 60,
                           "rules to try and retry both channels")
                wait_until(lambda: log.read_text().count("failed") >= 2, 30,
                           "rules to log the failed deliveries")
                text = log.read_text()
        finally:
            del os.environ["LT_SECRET_BROKER_PW"]
    assert_no_secret("lingtan rules' log", [text])
    assert_no_secret("a message on the broker", everything.payloads())
    state = (tmp_path / "state" / "alerts.sqlite").read_bytes()
    assert_no_secret("the alert state file", [state])
    print(f"checked {len(out.stdout.splitlines())} lines of `alerts test`, "
          f"{len(text.splitlines())} log lines of rules, {len(everything.payloads())} messages")


@pytest.mark.parametrize(("section", "yaml_text"), [
    ("broker", "broker: {url: 'mqtt://127.0.0.1:1883', password: '%s'}"),
    ("broker", "broker: {url: 'mqtt://lingtan:%s@127.0.0.1:1883'}"),
    ("ingest", "ingest: {influxdb: {url: 'http://127.0.0.1:8086', token: '%s'}}"),
    ("ingest", "ingest: {influxdb: {url: 'http://lingtan:%s@127.0.0.1:8086'}}"),
    ("alerts", "alerts: {channels: {hook: {url: 'json://127.0.0.1/hook/%s'}}}"),
    ("alerts", "alerts: {channels: {hook: {url_env: X, password: '%s'}}}"),
])
def test_a_secret_written_into_the_config_is_refused_without_repeating_it(
        tmp_path: Path, section: str, yaml_text: str) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text("site: {id: s1}\n" + yaml_text % INFLUX_TOKEN + "\n")
    out = subprocess.run([sys.executable, "-m", "lingtan", "check-config", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0, out.stdout
    assert section in out.stderr + out.stdout  # the error names where
    assert_no_secret("the config error", [out.stdout, out.stderr])
