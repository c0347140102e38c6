#!/bin/sh
# Create the dynamic security file, once, with the broker stopped:
#   setup.sh [FILE]   (default /var/lib/mosquitto/dynamic-security.json)
# Prints the admin password (for the gate scripts) and gatesync's password
# (for gatesync serve --broker-username gatesync --broker-password ...).
set -eu
file=${1:-/var/lib/mosquitto/dynamic-security.json}
[ ! -e "$file" ] || { echo "$file exists: setup.sh runs once" >&2; exit 1; }
admin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
centre=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
mosquitto_ctrl dynsec init "$file" admin "$admin" >/dev/null
chmod 600 "$file"
# gatesync: the centre reads every gate's uplink and writes every downlink.
# Its client id is free (--client-id, one per instance); a gate cannot take
# it, since every gate login is bound to its own.
python3 - "$file" "$centre" <<'PY'
import base64, hashlib, json, os, sys
path, password = sys.argv[1], sys.argv[2]
d = json.load(open(path))
raw = os.urandom(12)
salt = base64.b64encode(raw).decode()
h = hashlib.pbkdf2_hmac("sha512", password.encode(), raw, 101)  # the plugin's own scheme
d["clients"].append({"username": "gatesync", "textName": "gatesync (the centre)", "password": base64.b64encode(h).decode(),
	"salt": salt, "iterations": 101, "roles": [{"rolename": "gatesync"}]})
acls = [{"acltype": t, "topic": "gated/v1/#", "allow": True}
	for t in ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern")]
# Instances sharing ingest subscribe through $share/GROUP/..., which the
# plugin checks as written (docs/scaleout.md).
acls += [{"acltype": t, "topic": "$share/+/gated/v1/#", "allow": True} for t in ("subscribePattern", "unsubscribePattern")]
d["roles"].append({"rolename": "gatesync", "acls": acls})
json.dump(d, open(path, "w"), indent="\t")
PY
echo "admin $admin"
echo "gatesync $centre"
