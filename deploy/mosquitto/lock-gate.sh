#!/bin/sh
# Refuse a gate's login and disconnect it at once (a gate that sent forged claims); unlock-gate.sh undoes it:
#   lock-gate.sh GATE
set -eu
. "$(dirname "$0")/common.sh"
gate=${1:?usage: lock-gate.sh GATE}
valid_id "$gate" gate
ctrl disableClient "$gate"
