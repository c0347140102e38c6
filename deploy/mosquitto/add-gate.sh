#!/bin/sh
# Create or replace a gate's broker password: add-gate.sh GATE [PASSWDFILE]
# Prints the password to give gated run (--username GATE --password ...).
# Reload mosquitto afterwards: kill -HUP $(pidof mosquitto)
set -eu
gate=${1:?usage: add-gate.sh GATE [PASSWDFILE]}
file=${2:-/etc/mosquitto/gated/passwd}
case "$gate" in *[!A-Za-z0-9._-]*|"") echo "gate id: letters, digits, . _ -" >&2; exit 2;; esac
pass=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
[ -f "$file" ] || { touch "$file"; chmod 600 "$file"; }
mosquitto_passwd -b "$file" "$gate" "$pass"
echo "$gate $pass"
