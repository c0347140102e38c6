#!/bin/sh
# Create a gate's login on the running broker: add-gate.sh VENUE GATE
# Prints the password to give gated run (--venue VENUE --username GATE
# --password ...). The login may connect only as client gated-VENUE-GATE,
# publish only its own entries, status and hello, and read only its own ack
# and sync and its venue's whitelist and live topics.
set -eu
. "$(dirname "$0")/common.sh"
venue=${1:?usage: add-gate.sh VENUE GATE}
gate=${2:?usage: add-gate.sh VENUE GATE}
valid_id "$venue" venue
valid_id "$gate" gate
pass=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# One role a gate: mosquitto 2.0's plugin does not substitute %u in ACLs.
role="gate-$gate"
ctrl createRole "$role"
for k in entries status hello; do ctrl addRoleACL "$role" publishClientSend "gated/v1/$venue/$gate/$k" allow; done
for t in "$gate/ack" "$gate/sync" whitelist live; do
	ctrl addRoleACL "$role" subscribeLiteral "gated/v1/$venue/$t" allow
	ctrl addRoleACL "$role" publishClientReceive "gated/v1/$venue/$t" allow
done
ctrl createClient "$gate" -c "gated-$venue-$gate" -p "$pass"
ctrl addClientRole "$gate" "$role"
echo "$gate $pass"
