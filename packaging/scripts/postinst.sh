#!/bin/sh
# gated postinst: users, udev rules, units. The services are enabled on a
# fresh install but not started: a gate must be provisioned first.
set -e
if [ "$1" = "configure" ]; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers gated.conf
	fi
	if command -v udevadm >/dev/null 2>&1; then
		udevadm control --reload-rules 2>/dev/null || true
		udevadm trigger --subsystem-match=tty --subsystem-match=hidraw --subsystem-match=usb --subsystem-match=video4linux 2>/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		if [ -z "$2" ]; then
			systemctl enable gated.service >/dev/null 2>&1 || true
			echo "gated: set gate: in /etc/gated/gated.yaml, provision the gate"
			echo "       (sudo -u gated gated provision --data /var/lib/gated BUNDLE), check with"
			echo "       gated doctor, then: systemctl start gated"
		else
			systemctl try-restart gated.service gatesync.service || true
		fi
	fi
fi
exit 0
