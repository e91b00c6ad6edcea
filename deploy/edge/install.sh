#!/usr/bin/env bash
# install.sh — install lingtan on an edge box (Debian/Ubuntu/Raspberry Pi OS; x86_64, aarch64,
# armv7l) and run the edge agent under systemd.
#
#   sudo ./install.sh [--source SPEC] [--with-central] [--no-start]
#
#   --source SPEC    what pip installs: a wheel, a source folder or a requirement
#                    (default: this checkout, two folders up)
#   --with-central   also install lingtan-ingest and lingtan-rules (a box that does it all,
#                    with Mosquitto on the same box); they are enabled, not started
#   --no-start       install and enable, but start nothing (e.g. before the config is edited)
#
# What it does, each step only when needed (run it again to upgrade lingtan in place):
#   user and group `lingtan` (system, member of dialout for RS-485 adapters);
#   /opt/lingtan/venv with lingtan; /etc/lingtan/site.yaml from site.example.yaml unless the
#   file exists (never overwritten); systemd units; `systemctl enable --now lingtan-edge`.
# The outbox lives in /var/lib/lingtan (systemd StateDirectory): it survives reboots.
#
# For tests and packaging, LINGTAN_ROOT puts every path under another root, and
# SYSTEMCTL=true (or any command) replaces systemctl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_spec=$(cd "$here/../.." && pwd)
with_central=0
start=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --source) source_spec=${2:?--source needs a value}; shift 2 ;;
        --with-central) with_central=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=${LINGTAN_ROOT:-}
systemctl=${SYSTEMCTL:-systemctl}
prefix=$root/opt/lingtan
etc=$root/etc/lingtan
units=$root/etc/systemd/system
python=${PYTHON:-python3}

fail() { echo "install.sh: $*" >&2; exit 1; }

if [[ -z $root && $(id -u) -ne 0 ]]; then
    fail "run as root (sudo $0)"
fi

arch=$(uname -m)
case $arch in
    x86_64|aarch64|armv7l) ;;
    *) echo "install.sh: warning: untested architecture $arch; pip may have to build wheels" >&2 ;;
esac

# Python 3.11 or newer, with venv (Debian splits it into python3-venv)
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    fail "lingtan needs Python 3.11 or newer ($python is $("$python" -V 2>&1 || echo missing)); Debian 12 (bookworm) and Raspberry Pi OS 12 have it"
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ -z $root ]] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        fail "$python has no venv module: apt-get install python3-venv"
    fi
fi

if [[ -z $root ]]; then
    getent group lingtan >/dev/null || groupadd --system lingtan
    if ! getent passwd lingtan >/dev/null; then
        useradd --system --gid lingtan --home-dir /var/lib/lingtan --no-create-home \
            --shell /usr/sbin/nologin lingtan
    fi
    if getent group dialout >/dev/null; then usermod -a -G dialout lingtan; fi
fi

mkdir -p "$prefix" "$etc" "$units"
if [[ ! -x $prefix/venv/bin/python ]]; then
    "$python" -m venv "$prefix/venv"
fi
# armv7l: pydantic-core and orjson ship armv7 wheels on PyPI; piwheels is used by Raspberry Pi
# OS's pip.conf when present. Without a wheel pip would need a Rust toolchain and says so.
"$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
"$prefix/venv/bin/python" -m pip install --quiet --upgrade "$source_spec"
"$prefix/venv/bin/lingtan" --help >/dev/null

if [[ ! -e $etc/site.yaml ]]; then
    install -m 0640 "$here/site.example.yaml" "$etc/site.yaml"
    if [[ -z $root ]]; then chgrp lingtan "$etc/site.yaml"; fi
    echo "wrote $etc/site.yaml: edit the site, broker and devices"
fi

install -m 0644 "$here/lingtan-edge.service" "$units/lingtan-edge.service"
if [[ $with_central -eq 1 ]]; then
    install -m 0644 "$here/lingtan-ingest.service" "$units/lingtan-ingest.service"
    install -m 0644 "$here/lingtan-rules.service" "$units/lingtan-rules.service"
fi

"$systemctl" daemon-reload
if [[ $with_central -eq 1 ]]; then
    "$systemctl" enable lingtan-ingest.service lingtan-rules.service
fi
"$systemctl" enable lingtan-edge.service
if [[ $start -eq 1 ]]; then
    # starts it, or restarts it so a running agent picks up the new version (the outbox keeps
    # what was not yet acknowledged)
    "$systemctl" restart lingtan-edge.service
fi
echo "lingtan $("$prefix/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("lingtan"))') installed in $prefix"
echo "check the config: $prefix/venv/bin/lingtan check-config -c $etc/site.yaml"
