"""Mosquitto as we ship it (deploy/mosquitto), on loopback: TLS, passwords, the ACL.

The broker config is deploy/mosquitto/mosquitto.conf with only its paths and ports rewritten,
the ACL is deploy/mosquitto/acl, and edge boxes are added with deploy/mosquitto/add-edge.sh:
what the tests exercise is what we ship.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from telemetry.config import BrokerConfig
from tests.servers import Server, _binary, _start, free_port

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
SERVICE_USERS = ("lingtan-ingest", "lingtan-rules")
# a test-only user that may read every topic (pass OBSERVER_ACL as tls_broker's extra_acl)
OBSERVER = "lingtan-test-observer"
OBSERVER_ACL = f"\n# test only\nuser {OBSERVER}\ntopic read #\n"


@dataclass
class TlsBroker:
    """A running broker and the credentials made for it."""

    server: Server
    port: int  # TLS listener
    plain_port: int  # the loopback-only plain listener
    ca_file: Path
    password_files: dict[str, Path] = field(default_factory=dict)
    add_edge_env: dict[str, str] = field(default_factory=dict)

    def add_edge(self, site: str, box: str) -> str:
        """Run deploy/mosquitto/add-edge.sh SITE BOX; the new user (reload() to apply)."""
        user = f"edge-{site}-{box}"
        self.password_files[user] = _add_edge(self.add_edge_env, site, box)
        return user

    def restart(self) -> None:
        """Stop the broker and start it again on the same ports (clients see it go away)."""
        cmd = [str(a) for a in self.server.proc.args]  # type: ignore[union-attr]
        self.server.stop()
        self.server = _start(cmd, self.port, self.server.log, "mosquitto (TLS)")

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto` sends: rereads password file and ACL."""
        self.server.proc.send_signal(signal.SIGHUP)

    def config(self, user: str | None, *, password_file: Path | None = None,
               trust_ca: bool = True, tls: bool = True) -> BrokerConfig:
        """BrokerConfig for `user` over MQTT 5: TLS trusting our CA unless told otherwise.

        `user` None connects anonymously; `trust_ca` False leaves the system's CAs only;
        `tls` False uses the plain loopback listener.
        """
        url = (f"mqtts://127.0.0.1:{self.port}" if tls
               else f"mqtt://127.0.0.1:{self.plain_port}")
        if password_file is None and user is not None:
            password_file = self.password_files[user]
        return BrokerConfig(url=url, protocol="5", username=user, password_file=password_file,
                            ca_file=self.ca_file if tls and trust_ca else None)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return str(done.stdout)


def _add_edge(env: dict[str, str], site: str, box: str) -> Path:
    # add-edge.sh prints the path of the password file it wrote, and nothing else on stdout
    out = _run(["bash", str(SHIPPED / "add-edge.sh"), site, box], env=env).strip()
    assert "\n" not in out, out
    return Path(out)


def make_certs(out: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 (ca.crt, server.crt, server.key in `out`)."""
    openssl = _binary("openssl", "/usr/bin/openssl")
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run([openssl, "req", "-x509", *ec, "-keyout", str(out / "ca.key"), "-out",
          str(out / "ca.crt"), "-days", "2", "-subj", "/CN=lingtan test CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run([openssl, "req", "-new", *ec, "-keyout", str(out / "server.key"), "-out",
          str(out / "server.csr"), "-subj", "/CN=127.0.0.1"])
    ext = out / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid,issuer\n")
    _run([openssl, "x509", "-req", "-in", str(out / "server.csr"), "-CA", str(out / "ca.crt"),
          "-CAkey", str(out / "ca.key"), "-CAcreateserial", "-out", str(out / "server.crt"),
          "-days", "2", "-extfile", str(ext)])


def _secret_file(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


def _rewrite(text: str, replacements: list[tuple[str, str]]) -> str:
    """Replace each shipped line exactly once: a setting renamed in deploy/ must fail here."""
    lines = text.splitlines()
    for old, new in replacements:
        hits = [i for i, line in enumerate(lines) if line.strip() == old]
        if len(hits) != 1:
            raise RuntimeError(f"deploy/mosquitto/mosquitto.conf: expected the line {old!r} "
                               f"once, found it {len(hits)} times")
        lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def shipped_settings() -> dict[str, list[str]]:
    """The shipped mosquitto.conf as {option: [values]} (comments dropped)."""
    settings: dict[str, list[str]] = {}
    for line in (SHIPPED / "mosquitto.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings.setdefault(key, []).append(value.strip())
    return settings


@contextmanager
def tls_broker(tmp: Path, *, edges: Sequence[tuple[str, str]] = (),
               extra_acl: str = "", extra_conf: str = "") -> Iterator[TlsBroker]:
    """Mosquitto from deploy/mosquitto on free loopback ports.

    Service users (lingtan-ingest, lingtan-rules) get random passwords; each (site, box) in
    `edges` is added with add-edge.sh (user edge-SITE-BOX). `extra_acl` is appended to the ACL
    for test-only users; it cannot widen what the shipped users may do. `extra_conf` is
    appended to the config (e.g. "log_type all" while debugging).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    certs = tmp / "certs"
    make_certs(certs)
    creds = tmp / "credentials"
    creds.mkdir(mode=0o700)
    passwd, acl = tmp / "passwd", tmp / "acl"
    acl.write_text((SHIPPED / "acl").read_text() + extra_acl)
    mosquitto_passwd = _binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")

    files: dict[str, Path] = {}
    users = list(SERVICE_USERS) + [
        line.split()[1] for line in extra_acl.splitlines() if line.startswith("user ")]
    for user in users:
        password = secrets.token_hex(24)
        files[user] = _secret_file(creds / f"{user}.password", password)
        _run([mosquitto_passwd, *([] if passwd.exists() else ["-c"]), "-b", str(passwd), user,
              password])
    env = {**os.environ, "MOSQUITTO_PASSWD_FILE": str(passwd), "MOSQUITTO_ACL_FILE": str(acl),
           "EDGE_CREDENTIALS_DIR": str(creds), "MOSQUITTO_PASSWD": mosquitto_passwd}
    for site, box in edges:
        files[f"edge-{site}-{box}"] = _add_edge(env, site, box)

    port, plain_port = free_port(), free_port()
    data = tmp / "mosquitto-data"
    data.mkdir()
    text = _rewrite((SHIPPED / "mosquitto.conf").read_text(), [
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {data}/"),
        ("password_file /etc/mosquitto/passwd", f"password_file {passwd}"),
        ("acl_file /etc/mosquitto/acl", f"acl_file {acl}"),
        ("listener 1883 127.0.0.1", f"listener {plain_port} 127.0.0.1"),
        ("listener 8883", f"listener {port} 127.0.0.1"),
        ("cafile /etc/mosquitto/certs/ca.crt", f"cafile {certs / 'ca.crt'}"),
        ("certfile /etc/mosquitto/certs/server.crt", f"certfile {certs / 'server.crt'}"),
        ("keyfile /etc/mosquitto/certs/server.key", f"keyfile {certs / 'server.key'}"),
    ])
    if os.geteuid() == 0:
        # Started as root, Mosquitto drops to the `mosquitto` user, which cannot read pytest's
        # private tmp folders (see tests/servers.py).
        text += "user root\n"
    text += extra_conf
    conf = tmp / "mosquitto.conf"
    conf.write_text(text)
    server = _start([_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)], port,
                    tmp / "mosquitto.log", "mosquitto (TLS)")
    broker = TlsBroker(server, port, plain_port, certs / "ca.crt", files, env)
    try:
        yield broker
    finally:
        broker.server.stop()  # the one running now: restart() replaces it
