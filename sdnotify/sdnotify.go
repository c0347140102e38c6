// Package sdnotify tells systemd how the daemon is doing, over the
// sd_notify protocol: ready, reloading, stopping, a one-line status, and
// watchdog pings while the daemon is healthy.
//
// Outside systemd (NOTIFY_SOCKET unset) every call does nothing, so the
// same binary runs from a shell, a test or a unit with Type=notify.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to the service manager. Its methods are
// safe for concurrent use.
type Notifier struct {
	log *slog.Logger
	// send and watchdog are the OS boundary, replaced in tests.
	send     func(state string) (bool, error)
	watchdog func() (time.Duration, error)
}

// New returns a notifier that talks to the socket named by NOTIFY_SOCKET.
// A nil log discards.
func New(log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{
		log: log,
		// The environment is kept (false): a reload re-reads nothing from it,
		// and keeping it lets a test or `systemctl show` see what we saw.
		send:     func(s string) (bool, error) { return daemon.SdNotify(false, s) },
		watchdog: func() (time.Duration, error) { return daemon.SdWatchdogEnabled(false) },
	}
}

func (n *Notifier) notify(state string) {
	if _, err := n.send(state); err != nil {
		// Not fatal: the daemon still works; systemd will time the start out
		// and say so in the journal, where this line helps explain why.
		n.log.Warn("cannot notify systemd", "state", state, "err", err)
	}
}

// Ready reports that start-up finished, with a status line for
// `systemctl status`.
func (n *Notifier) Ready(status string) {
	n.notify(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

// Reloading reports that a reload began; call Ready when it is done.
// MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload to
// its request; older systemd ignores it.
func (n *Notifier) Reloading() {
	n.notify(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, monotonicUsec()))
}

// Stopping reports that shutdown began, so systemd waits for the drain
// rather than calling the process hung.
func (n *Notifier) Stopping() { n.notify(daemon.SdNotifyStopping + "\nSTATUS=draining") }

// Status sets the one-line status `systemctl status` shows.
func (n *Notifier) Status(s string) { n.notify("STATUS=" + s) }

// WatchdogInterval is how often Watchdog pings: half the WatchdogSec
// systemd gave us, as sd_watchdog_enabled(3) advises; 0 when the watchdog
// is off for this process.
func (n *Notifier) WatchdogInterval() time.Duration {
	d, err := n.watchdog()
	if err != nil {
		n.log.Warn("ignoring a bad WATCHDOG_USEC", "err", err)
		return 0
	}
	return d / 2
}

// Watchdog pings the watchdog until ctx ends, each time only if healthy
// returns nil. A daemon whose health check fails or hangs stops pinging,
// and systemd restarts it after WatchdogSec: that is the point, so the
// check must cover what a restart can fix (the store answering) and not
// what it cannot (a scanner unplugged). It returns at once when the
// watchdog is off.
func (n *Notifier) Watchdog(ctx context.Context, healthy func(context.Context) error) {
	every := n.WatchdogInterval()
	if every <= 0 {
		return
	}
	n.log.Debug("watchdog on", "ping_every", every)
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		hctx, cancel := context.WithTimeout(ctx, every)
		err := healthy(hctx)
		cancel()
		switch {
		case err == nil:
			if failing {
				n.log.Info("health check passes again; watchdog pings resume")
				failing = false
			}
			n.notify(daemon.SdNotifyWatchdog)
		case ctx.Err() != nil:
			return
		case !failing:
			n.log.Error("health check failed; not pinging the watchdog, systemd will restart gated if this persists", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Serve is the protocol for a daemon with nothing to reload: READY=1 with
// status now, then watchdog pings while healthy (nil: always) until ctx
// ends. Run it in its own goroutine once serving began. It does not send
// STOPPING=1: the goroutine that shuts down calls Stopping, so the message
// leaves before the process exits.
func (n *Notifier) Serve(ctx context.Context, status string, healthy func(context.Context) error) {
	if healthy == nil {
		healthy = func(context.Context) error { return nil }
	}
	n.Ready(status)
	n.Watchdog(ctx, healthy)
}
