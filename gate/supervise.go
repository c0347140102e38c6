package gate

import (
	"context"
	"os"
	"strings"
	"sync"

	"github.com/gated-dev/gated/gate/scanner"
)

// ScannerMonitor is told when a supervised scanner starts, stops on its
// own, or is removed by a reload (ops.Monitor is one). Its methods may be
// called from several goroutines at once.
type ScannerMonitor interface {
	// ScannerStarted is called with what the monitor may ask whether the
	// device is there (see Supervisor.Start).
	ScannerStarted(name string, src any)
	ScannerStopped(name string, err error)
	ScannerRemoved(name string)
}

// Supervisor runs each scanner source in its own Gate.Run, so one can be
// added or removed on reload while the others keep reading. A source that
// loses its device reopens it itself, with backoff (see scanner.Backoff);
// the supervisor notices only a source that ends. Its methods are safe
// for concurrent use.
type Supervisor struct {
	g     *Gate
	mon   ScannerMonitor
	ended chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	running map[string]*supervised // by URI
}

type supervised struct {
	src    scanner.Source
	cancel context.CancelFunc
}

// NewSupervisor returns a supervisor of g's sources that reports to mon.
func NewSupervisor(g *Gate, mon ScannerMonitor) *Supervisor {
	return &Supervisor{g: g, mon: mon, ended: make(chan struct{}, 1), running: map[string]*supervised{}}
}

// Start runs src, known by uri (what reloads compare), until it ends or
// ctx is done.
func (s *Supervisor) Start(ctx context.Context, uri string, src scanner.Source) {
	sctx, cancel := context.WithCancel(ctx)
	r := &supervised{src: src, cancel: cancel}
	s.mu.Lock()
	s.running[uri] = r
	s.mu.Unlock()
	s.mon.ScannerStarted(src.Name(), health(src))
	s.wg.Go(func() {
		s.g.Run(sctx, []scanner.Source{src})
		s.mu.Lock()
		if s.running[uri] == r { // not removed by a reload
			delete(s.running, uri)
			s.mon.ScannerStopped(src.Name(), nil)
		}
		s.mu.Unlock()
		cancel()
		select {
		case s.ended <- struct{}{}:
		default:
		}
	})
}

// Ended receives after a source has ended (coalesced: check Count).
func (s *Supervisor) Ended() <-chan struct{} { return s.ended }

// Has reports whether a source known by uri is running.
func (s *Supervisor) Has(uri string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[uri] != nil
}

// Count returns how many sources are running.
func (s *Supervisor) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running)
}

// Apply makes the running set match uris: sources whose URI is gone are
// stopped, and opened holds the sources to start for new URIs. Sources
// whose URI stays keep running.
func (s *Supervisor) Apply(ctx context.Context, uris []string, opened map[string]scanner.Source) (added, removed []string) {
	want := map[string]bool{}
	for _, u := range uris {
		want[u] = true
	}
	s.mu.Lock()
	var stop []*supervised
	for uri, r := range s.running {
		if !want[uri] {
			stop = append(stop, r)
			delete(s.running, uri)
			removed = append(removed, uri)
		}
	}
	s.mu.Unlock()
	for _, r := range stop {
		r.cancel()
		s.mon.ScannerRemoved(r.src.Name())
	}
	for _, uri := range uris {
		if src := opened[uri]; src != nil {
			s.Start(ctx, uri, src)
			added = append(added, uri)
		}
	}
	return added, removed
}

// Wait returns when every source started has ended.
func (s *Supervisor) Wait() { s.wg.Wait() }

// health is what the monitor asks whether a scanner's device is there: the
// source itself when it can tell (it has Connected() bool), otherwise, for
// a source named by a device node (serial:/dev/ttyACM0, camera:/dev/video0),
// whether that node exists. Unplugging a USB scanner removes its node, so
// the console and /healthz notice within a second.
func health(src scanner.Source) any {
	if _, ok := src.(interface{ Connected() bool }); ok {
		return src
	}
	kind, path, _ := strings.Cut(src.Name(), ":")
	if (kind == "serial" || kind == "camera") && strings.HasPrefix(path, "/dev/") {
		return nodePresence(path)
	}
	return src
}

type nodePresence string

func (p nodePresence) Connected() bool {
	_, err := os.Stat(string(p))
	return err == nil
}
