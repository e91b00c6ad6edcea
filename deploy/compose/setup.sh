#!/usr/bin/env bash
# setup.sh — make the secrets the compose stack needs, once, under ./secrets/ (gitignored).
#
#   ./setup.sh [BROKER_NAME]     BROKER_NAME: the DNS name edge boxes use (default: this host's)
#
# Writes random passwords and tokens, a private CA with a broker certificate for
# BROKER_NAME, Mosquitto's password file for the services lingtan-ingest and lingtan-rules,
# and local/acl, the broker's ACL (a copy of deploy/mosquitto/acl). Existing files are kept: run it again safely. Nothing is printed but paths.
# Needs openssl, and docker (mosquitto_passwd runs in the broker's image).
set -euo pipefail
cd "$(dirname "$0")"

broker=${1:-$(hostname -f 2>/dev/null || hostname)}
[[ $broker =~ ^[A-Za-z0-9.-]+$ ]] || { echo "setup.sh: '$broker' is not a DNS name" >&2; exit 2; }
mosquitto_image=$(sed -n 's/^ *image: \(eclipse-mosquitto:[^ ]*\)$/\1/p' compose.yaml)

umask 077
mkdir -p secrets/certs
chmod 0700 secrets

random() {  # 48 hex digits: nothing to escape in YAML, URLs or headers
    od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
}
for name in influxdb-admin-password influxdb-token grafana-admin-password \
            mqtt-ingest-password mqtt-rules-password; do
    if [[ ! -s secrets/$name ]]; then
        random > "secrets/$name"
        echo "wrote secrets/$name"
    fi
done

# the broker's ACL: the shipped one, copied once; edge boxes' blocks are appended to the copy
mkdir -p local
if [[ ! -s local/acl ]]; then
    cp ../mosquitto/acl local/acl
    chmod 0644 local/acl
    echo "wrote local/acl (from deploy/mosquitto/acl)"
fi

if [[ ! -s secrets/mosquitto-passwd ]]; then
    # hashed with the broker's own tool, passwords read from the files inside the container
    docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/secrets:/s" "$mosquitto_image" sh -c '
        mosquitto_passwd -b -c /s/mosquitto-passwd lingtan-ingest "$(cat /s/mqtt-ingest-password)" &&
        mosquitto_passwd -b /s/mosquitto-passwd lingtan-rules "$(cat /s/mqtt-rules-password)"'
    echo "wrote secrets/mosquitto-passwd"
fi

if [[ ! -s secrets/certs/server.crt ]]; then
    (
        cd secrets/certs
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -keyout ca.key -out ca.crt -subj "/CN=lingtan broker CA" \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj "/CN=$broker" 2>/dev/null
        printf '%s\n' basicConstraints=critical,CA:FALSE extendedKeyUsage=serverAuth \
            keyUsage=critical,digitalSignature,keyEncipherment \
            subjectKeyIdentifier=hash authorityKeyIdentifier=keyid,issuer \
            "subjectAltName=DNS:$broker" > server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
            -extfile server.ext -out server.crt 2>/dev/null
        rm -f server.csr server.ext
    )
    echo "wrote secrets/certs (CA and broker certificate for $broker; give edge boxes ca.crt)"
fi

# Bind-mounted files keep their host mode: the services run as their own users (mosquitto,
# influxdb, grafana, lingtan), so the files are readable; the folder (0700) keeps them private
# on this host.
find secrets -type f -exec chmod 0644 {} +
chmod 0600 secrets/certs/ca.key   # not mounted anywhere: only for signing
chmod 0700 secrets secrets/certs
