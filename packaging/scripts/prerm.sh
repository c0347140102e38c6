#!/bin/sh
# gated prerm: stop the services before their binaries go. SIGTERM drains:
# scans in flight are committed first.
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
	systemctl stop gated.service gatesync.service >/dev/null 2>&1 || true
	systemctl disable gated.service gatesync.service >/dev/null 2>&1 || true
fi
exit 0
