# Shared by the gate scripts: how to reach the running broker's dynamic
# security plugin. Set MOSQ_CTRL_OPTS (default: -h 127.0.0.1 -p 1883 -u
# admin) and MOSQ_ADMIN_PASSWORD (the admin password setup.sh printed).

# ctrl runs a dynsec command and fails when the plugin refuses it
# (mosquitto_ctrl itself exits 0 on "Error: ...").
ctrl() {
	# shellcheck disable=SC2086
	out=$(mosquitto_ctrl ${MOSQ_CTRL_OPTS:--h 127.0.0.1 -p 1883 -u admin} \
		-P "${MOSQ_ADMIN_PASSWORD:?set MOSQ_ADMIN_PASSWORD to the dynsec admin password (setup.sh printed it)}" \
		dynsec "$@" 2>&1) || { echo "$out" >&2; return 1; }
	out=$(printf '%s\n' "$out" | grep -v -e '^Warning: You are running mosquitto_ctrl without encryption' \
		-e '^This means all of the configuration changes' -e '^$' || true)
	case "$out" in *Error*) echo "$out" >&2; return 1;; esac
	[ -z "$out" ] || printf '%s\n' "$out"
}

valid_id() {
	case "$1" in -*|.*|_*|*[!A-Za-z0-9._-]*|"") bad=1;; *) bad=0;; esac
	if [ "$bad" = 1 ] || [ ${#1} -gt 64 ]; then
		echo "$2 \"$1\": 1-64 letters, digits, . _ - (starting with a letter or digit)" >&2
		exit 2
	fi
}
