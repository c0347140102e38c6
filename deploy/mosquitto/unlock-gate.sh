#!/bin/sh
# Let a locked gate log in again:
#   unlock-gate.sh GATE
set -eu
. "$(dirname "$0")/common.sh"
gate=${1:?usage: unlock-gate.sh GATE}
valid_id "$gate" gate
ctrl enableClient "$gate"
