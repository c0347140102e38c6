// Command venue runs a venue on loopback: gatesync serve with its embedded
// broker and several gated processes, each scanning at a lane's pace, and
// reports scan-to-verdict latency, CPU per gate, the centre's ingest lag
// and readmissions (a ticket admitted at one gate and shown at another a
// moment later).
//
//	go run ./bench/venue [-gates 8] [-rate 2] [-duration 30s] [-cross 2s]
//
// Each gate admits fresh tickets at -rate a second. A fraction of the
// scans (one in four) shows, at the next gate, a ticket another gate
// admitted -cross earlier: every one must be refused (already_used) once
// the live fan-out reached that gate.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func check(err error, what ...any) {
	if err != nil {
		log.Fatal(append(what, err)...)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gate is one gated process and what it decided.
type gate struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	mu   sync.Mutex
	sent map[string]time.Time // ticket code -> when written to stdin
	lat  []time.Duration
	out  []decision
}

type decision struct {
	Verdict, Reason, Ticket string
	At                      time.Time
	code                    string
}

// cpu returns the process's user+system CPU time so far.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func main() {
	gates := flag.Int("gates", 8, "gate processes")
	rate := flag.Float64("rate", 2, "scans a second at each gate (a lane passes 1-2 a second)")
	dur := flag.Duration("duration", 30*time.Second, "how long the gates scan")
	cross := flag.Duration("cross", 2*time.Second, "how long after its admission a ticket is shown at another gate")
	flag.Parse()
	dir, err := os.MkdirTemp("", "bench-venue")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bin")
	out, err := exec.Command("go", "build", "-o", bin+"/", "./cmd/gated", "./cmd/gatesync").CombinedOutput()
	check(err, "build (run from the repository root):", string(out))
	run := func(name string, args ...string) string {
		out, err := exec.Command(filepath.Join(bin, name), args...).Output()
		check(err, name, args)
		return string(out)
	}
	centre := filepath.Join(dir, "centre")
	run("gatesync", "init", "--dir", centre)
	perGate := int(*rate*dur.Seconds()) + 10
	codes := strings.Split(strings.TrimSpace(run("gatesync", "issue", "--dir", centre, "--event", "E", "--count", fmt.Sprint(perGate*(*gates)))), "\n") // base45 has spaces: a code a line
	run("gatesync", "export", "--dir", centre, "--event", "E", "--out", filepath.Join(dir, "b.json"))
	httpPort, mqttPort := freePort(), freePort()
	serve := exec.Command(filepath.Join(bin, "gatesync"), "serve", "--dir", centre, "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", mqttPort))
	serve.Stderr = io.Discard
	pass := map[string]string{}
	gs := make([]*gate, *gates)
	for i := range gs {
		name := fmt.Sprintf("g%d", i+1)
		run("gated", "provision", "--data", filepath.Join(dir, name), filepath.Join(dir, "b.json"))
		f := strings.Fields(run("gatesync", "add-gate", "--dir", centre, "--venue", "arena", "--gate", name))
		pass[name] = f[len(f)-1]
	}
	check(serve.Start())
	defer func() { serve.Process.Signal(syscall.SIGTERM); serve.Wait() }()
	tok, _ := os.ReadFile(filepath.Join(centre, "api.token"))
	for range 100 {
		if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort)); err == nil {
			r.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var ready sync.WaitGroup
	for i := range gs {
		g := &gate{name: fmt.Sprintf("g%d", i+1), sent: map[string]time.Time{}}
		gs[i] = g
		g.cmd = exec.Command(filepath.Join(bin, "gated"), "run", "--data", filepath.Join(dir, g.name), "--gate", g.name,
			"--venue", "arena", "--broker", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), "--username", g.name,
			"--password", pass[g.name], "--output", "json")
		g.in, _ = g.cmd.StdinPipe()
		stdout, _ := g.cmd.StdoutPipe()
		stderr, _ := g.cmd.StderrPipe()
		check(g.cmd.Start())
		ready.Add(1)
		go func() {
			sc := bufio.NewScanner(stderr)
			done := false
			for sc.Scan() {
				if !done && strings.Contains(sc.Text(), "connected to broker") {
					done = true
					ready.Done()
				}
			}
		}()
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				now := time.Now()
				var d struct {
					decision
					Code string `json:"code"`
				}
				if json.Unmarshal(sc.Bytes(), &d) != nil {
					continue
				}
				g.mu.Lock()
				// Decisions come in scan order: the oldest pending scan is this one.
				var first string
				var at time.Time
				for c, t := range g.sent {
					if first == "" || t.Before(at) {
						first, at = c, t
					}
				}
				if first != "" {
					g.lat = append(g.lat, now.Sub(at))
					delete(g.sent, first)
				}
				d.decision.code = first
				g.out = append(g.out, d.decision)
				g.mu.Unlock()
			}
		}()
	}
	ready.Wait()
	time.Sleep(3 * time.Second) // catch-up done, subscriptions settled
	cpu0 := make([]time.Duration, len(gs))
	for i, g := range gs {
		cpu0[i] = cpu(g.cmd.Process.Pid)
	}
	scpu0 := cpu(serve.Process.Pid)
	start := time.Now()
	type crossScan struct {
		code string
		due  time.Time
	}
	var wg sync.WaitGroup
	crossAt := make([][]crossScan, len(gs)) // per gate: tickets admitted elsewhere to show there
	var cmu sync.Mutex
	crossed := 0
	for i, g := range gs {
		wg.Go(func() {
			every := time.Duration(float64(time.Second) / *rate)
			tick := time.NewTicker(every)
			defer tick.Stop()
			next := 0
			for n := 0; time.Since(start) < *dur; n++ {
				<-tick.C
				code := ""
				cmu.Lock()
				if q := crossAt[i]; n%4 == 3 && len(q) > 0 && time.Now().After(q[0].due) {
					code, crossAt[i] = q[0].code, q[1:]
					crossed++
				}
				cmu.Unlock()
				if code == "" {
					code = codes[i*perGate+next]
					next++
					cmu.Lock()
					j := (i + 1) % len(gs)
					crossAt[j] = append(crossAt[j], crossScan{code, time.Now().Add(*cross)})
					cmu.Unlock()
				}
				g.mu.Lock()
				g.sent[code] = time.Now()
				g.mu.Unlock()
				io.WriteString(g.in, code+"\n")
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	time.Sleep(time.Second)
	var lat []time.Duration
	var cpus []time.Duration
	decided, readmitted := 0, 0
	admittedAt := map[string]string{} // code -> gate
	for i, g := range gs {
		cpus = append(cpus, cpu(g.cmd.Process.Pid)-cpu0[i])
		g.mu.Lock()
		lat = append(lat, g.lat...)
		for _, d := range g.out {
			decided++
			if d.Verdict == "admit" {
				if prev, ok := admittedAt[d.code]; ok && prev != g.name {
					readmitted++
				}
				admittedAt[d.code] = g.name
			}
		}
		g.mu.Unlock()
	}
	scpu := cpu(serve.Process.Pid) - scpu0
	// Ingest lag: the centre's receipt of each entry after its decision.
	var lag []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/v1/entries?since=0&limit=100000", httpPort), nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		r, err := http.DefaultClient.Do(req)
		check(err)
		var page struct {
			Entries []struct {
				ReceivedAt time.Time `json:"received_at"`
				Entry      struct {
					At time.Time `json:"at"`
				} `json:"entry"`
			} `json:"entries"`
		}
		json.NewDecoder(r.Body).Decode(&page)
		r.Body.Close()
		if len(page.Entries) >= decided || time.Now().After(deadline) {
			for _, e := range page.Entries {
				lag = append(lag, e.ReceivedAt.Sub(e.Entry.At))
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, g := range gs {
		g.in.Close()
		g.cmd.Process.Signal(syscall.SIGTERM)
		g.cmd.Wait()
	}
	slices.Sort(cpus)
	fmt.Printf("%d gates at %.1f scans/s each for %s: %d decisions, %d shown at a second gate %s after their admission\n",
		len(gs), *rate, el.Round(time.Second), decided, crossed, *cross)
	fmt.Printf("scan-to-verdict: p50 %s, p99 %s, max %s\n", pct(lat, .5).Round(10*time.Microsecond),
		pct(lat, .99).Round(10*time.Microsecond), pct(lat, 1).Round(10*time.Microsecond))
	fmt.Printf("CPU per gate: median %.1f%%, max %.1f%% of one core; gatesync serve (embedded broker) %.1f%%\n",
		100*cpus[len(cpus)/2].Seconds()/el.Seconds(), 100*cpus[len(cpus)-1].Seconds()/el.Seconds(), 100*scpu.Seconds()/el.Seconds())
	fmt.Printf("ingest lag (decision to the centre's books): p50 %s, p99 %s, %d of %d entries booked\n",
		pct(lag, .5).Round(time.Millisecond), pct(lag, .99).Round(time.Millisecond), len(lag), decided)
	fmt.Printf("readmissions at a second gate: %d of %d; %d admissions in all\n", readmitted, crossed, len(admittedAt))
}
