#!/bin/sh
# gated postrm: the state directories (stores, journals, keys) are kept
# even on purge: they hold the decisions the centre may not have yet.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
