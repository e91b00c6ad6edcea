#!/usr/bin/env bash
# add-edge.sh SITE BOX — give one edge box its own broker credential and ACL block.
#
# Creates user edge-SITE-BOX with a random password in the Mosquitto password file, appends
# the box's block to the ACL (publish on lingtan/v1/SITE/+/sample and .../status only), and
# writes the password to a 0600 file whose path it prints. The password itself never goes to
# stdout or stderr: copy that file to the box (its broker.password_file) and delete it here.
#
# Paths (defaults are the Debian layout deploy/mosquitto/README.md describes):
#   MOSQUITTO_PASSWD_FILE   /etc/mosquitto/passwd
#   MOSQUITTO_ACL_FILE      /etc/mosquitto/acl
#   EDGE_CREDENTIALS_DIR    /etc/lingtan/edge-credentials
#   MOSQUITTO_PASSWD        mosquitto_passwd (the tool)
#
# Mosquitto reads the password file and the ACL at start and on SIGHUP: run
# `systemctl reload mosquitto` afterwards.
set -euo pipefail

usage() {
    echo "usage: $0 SITE BOX   (letters, digits, _ and - only; e.g. $0 wuhan 1)" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
site=$1
box=$2
ident='^[A-Za-z0-9_-]+$'
[[ $site =~ $ident ]] || { echo "add-edge.sh: SITE '$site' must match $ident" >&2; exit 2; }
[[ $box =~ $ident ]] || { echo "add-edge.sh: BOX '$box' must match $ident" >&2; exit 2; }

passwd_file=${MOSQUITTO_PASSWD_FILE:-/etc/mosquitto/passwd}
acl_file=${MOSQUITTO_ACL_FILE:-/etc/mosquitto/acl}
cred_dir=${EDGE_CREDENTIALS_DIR:-/etc/lingtan/edge-credentials}
mosquitto_passwd=${MOSQUITTO_PASSWD:-mosquitto_passwd}

user="edge-${site}-${box}"
cred_file="${cred_dir}/${user}.password"

[[ -f $acl_file ]] || { echo "add-edge.sh: ACL file $acl_file not found" >&2; exit 1; }
# "edge-a-b-1" is both site a-b box 1 and site a box b-1: never hand out a name twice (and
# never silently replace a box's password). To rotate a password, use mosquitto_passwd.
if grep -q "^${user}:" "$passwd_file" 2>/dev/null; then
    echo "add-edge.sh: user $user already exists in $passwd_file" >&2
    exit 1
fi
if grep -qx "user ${user}" "$acl_file"; then
    echo "add-edge.sh: user $user already has a block in $acl_file" >&2
    exit 1
fi
if [[ -e $cred_file ]]; then
    echo "add-edge.sh: $cred_file already exists" >&2
    exit 1
fi

# 24 random bytes as 48 hex digits: no shell or YAML metacharacters, nothing to escape.
# (od reads a fixed count and exits, so no SIGPIPE trips pipefail.)
password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
[[ ${#password} -eq 48 ]] || { echo "add-edge.sh: could not read /dev/urandom" >&2; exit 1; }

# The file is created 0600 from the start (umask), so the password is never readable by others.
mkdir -p -m 0700 "$cred_dir"
(umask 077 && printf '%s\n' "$password" > "$cred_file")

# -b puts the password on mosquitto_passwd's command line, visible in the process list for the
# moment it runs: run this on the broker host, where only administrators log in.
if [[ -e $passwd_file ]]; then
    "$mosquitto_passwd" -b "$passwd_file" "$user" "$password"
else
    (umask 027 && "$mosquitto_passwd" -c -b "$passwd_file" "$user" "$password")
fi

# A block starts at its `user` line; make sure it does not run on from an unterminated last line.
if [[ -s $acl_file && -n $(tail -c1 "$acl_file") ]]; then
    echo >> "$acl_file"
fi
cat >> "$acl_file" <<EOF

# edge box ${box} at site ${site} (add-edge.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ))
user ${user}
topic write lingtan/v1/${site}/+/sample
topic write lingtan/v1/${site}/+/status
EOF

echo "added ${user}; reload the broker to apply: systemctl reload mosquitto" >&2
echo "$cred_file"
