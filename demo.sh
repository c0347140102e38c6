#!/usr/bin/env bash
# Builds gated and gatesync, then runs the main job offline on embedded
# defaults: a centre issues tickets, a gate is provisioned from a signed
# bundle and scans them, one of them twice, plus a forged one.
set -euo pipefail
cd "$(dirname "$0")"
go build -o bin/ ./cmd/gated ./cmd/gatesync
D=${DEMO_DIR:-$(mktemp -d /tmp/gated-demo.XXXXXX)}
echo "== demo files in $D"
bin/gatesync init --dir "$D/centre"
bin/gatesync issue --dir "$D/centre" --event demo --count 3 --zone GA --png "$D/qr" > "$D/tickets.txt"
echo "== issued 3 tickets (QR images in $D/qr):"; cat "$D/tickets.txt"
bin/gatesync init --dir "$D/forger" > /dev/null
bin/gatesync issue --dir "$D/forger" --event demo --count 1 > "$D/forged.txt"
bin/gatesync export --dir "$D/centre" --event demo --out "$D/bundle.json"
bin/gated provision --data "$D/gate" "$D/bundle.json"
echo "== scanning: 3 tickets, the first again, a forged one, and line noise"
{ cat "$D/tickets.txt"; head -1 "$D/tickets.txt"; cat "$D/forged.txt"; echo "noise"; } |
  bin/gated run --data "$D/gate" --gate demo-north-1 --output console --log-level warn
echo "== the gate's journal (gated journal --data $D/gate):"
bin/gated journal --data "$D/gate"
