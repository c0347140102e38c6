#!/bin/sh
# Delete a gate's login (and disconnect it); also run gatesync remove-gate for its record at the centre:
#   remove-gate.sh GATE
set -eu
. "$(dirname "$0")/common.sh"
gate=${1:?usage: remove-gate.sh GATE}
valid_id "$gate" gate
ctrl deleteClient "$gate"
ctrl deleteRole "gate-$gate"
