// Command snapshot measures a whitelist snapshot of N tickets (default
// 1,000,000) sent by gatesync serve to a gate over the embedded broker:
// the time to receive and apply it, how long scans wait meanwhile (p50,
// p99, max of scans fed to gated's stdin while the snapshot is applied),
// gated's peak resident memory, and the gate store's bytes a ticket.
//
//	go run ./bench/snapshot [-n 1000000] [-baseline REF]
//
// It builds gated and gatesync, issues the tickets at a fresh centre after
// the gate was provisioned with one ticket, so the gate's first hello gets
// a snapshot. With -baseline, gated is also built from git revision REF
// (e.g. main) and measured in the same run on the same centre, before the
// working tree's gated.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 1_000_000, "tickets")
	baseline := flag.String("baseline", "", "also measure gated built from this git revision, e.g. main")
	keep := flag.Bool("keep", false, "keep the temp directory")
	again := flag.Int("again", 0, "then issue this many more tickets (over 5,000: a second snapshot, replacing the full whitelist)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "bench-snapshot")
	check(err)
	if !*keep {
		defer os.RemoveAll(dir)
	}
	bin := build(dir, "bin", ".")
	gates := []struct{ name, bin string }{{"this tree", bin}}
	if *baseline != "" {
		src := filepath.Join(dir, "baseline-src")
		check(os.MkdirAll(src, 0o755))
		arch := exec.Command("sh", "-c", fmt.Sprintf("git archive %q | tar -x -C %q", *baseline, src))
		if out, err := arch.CombinedOutput(); err != nil {
			log.Fatalf("git archive %s: %v\n%s", *baseline, err, out)
		}
		gates = append([]struct{ name, bin string }{{*baseline, build(dir, "bin-baseline", src)}}, gates...)
	}
	centre, pristine := filepath.Join(dir, "centre"), filepath.Join(dir, "gate0")
	run(bin, "gatesync", "init", "--dir", centre)
	code := strings.TrimSpace(run(bin, "gatesync", "issue", "--dir", centre, "--event", "E", "--count", "1"))
	run(bin, "gatesync", "export", "--dir", centre, "--event", "E", "--out", filepath.Join(dir, "b.json"))
	run(bin, "gated", "provision", "--data", pristine, filepath.Join(dir, "b.json"))
	start := time.Now()
	for left := *n; left > 0; left -= 100_000 {
		run(bin, "gatesync", "issue", "--dir", centre, "--event", "E", "--count", fmt.Sprint(min(left, 100_000)))
	}
	log.Printf("issued %d tickets at the centre in %s", *n, time.Since(start).Round(time.Millisecond))
	var passwords []string // add-gate needs the centre's store, which serve holds
	for i := range gates {
		pass := strings.Fields(run(bin, "gatesync", "add-gate", "--dir", centre, "--venue", "v", "--gate", fmt.Sprintf("g%d", i+1)))
		passwords = append(passwords, pass[len(pass)-1])
	}

	mqttPort, httpPort := freePort(), freePort()
	serve := exec.Command(filepath.Join(bin, "gatesync"), "serve", "--dir", centre, "--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", mqttPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort))
	serveLog, _ := os.Create(filepath.Join(dir, "serve.log"))
	serve.Stdout, serve.Stderr = serveLog, serveLog
	check(serve.Start())
	defer serve.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)

	var results []string
	for i, g := range gates {
		gateID := fmt.Sprintf("g%d", i+1)
		data := filepath.Join(dir, "gate-"+gateID)
		copyDir(pristine, data)
		args := []string{"run", "--data", data, "--gate", gateID, "--venue", "v", "--broker", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort),
			"--username", gateID, "--password", passwords[i], "--output", "json"}
		issueMore := func() {
			if *again > 0 {
				run(bin, "gatesync", "issue", "--server", fmt.Sprintf("http://127.0.0.1:%d", httpPort), "--dir", centre,
					"--event", "E", "--count", fmt.Sprint(*again))
			}
		}
		results = append(results, measure(g.name, g.bin, args, data, code, *n, issueMore, *again > 0))
	}
	for _, r := range results {
		fmt.Print(r)
	}
}

// measure runs one gated until it has applied the snapshot (and, with
// second, a second one that more() causes), scanning all the while, then
// restarts it on the loaded store.
func measure(name, bin string, args []string, data, code string, n int, more func(), second bool) string {
	t0 := time.Now()
	g, lines, sc := startGate(bin, args)
	stopScans := make(chan struct{})
	var lats []scanLat
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); lats = sc.scan(code, stopScans) }()
	type window struct {
		recv, applied time.Time
		took          string
		hwm           int
	}
	var ws []window
	tookRe := regexp.MustCompile(`took=(\S+)`)
	wait := func() {
		var w window
		for l := range lines {
			if strings.Contains(l, "receiving snapshot") {
				w.recv = time.Now()
			}
			if strings.Contains(l, "snapshot applied") {
				w.applied = time.Now()
				w.took = tookRe.FindStringSubmatch(l)[1]
				break
			}
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "ignored downlink") {
				log.Printf("gated: %s", l)
			}
		}
		time.Sleep(time.Second)
		_, w.hwm = rss(g.Process.Pid)
		ws = append(ws, w)
	}
	wait()
	total := time.Since(t0)
	if second {
		more()
		wait()
	}
	close(stopScans)
	wg.Wait()
	rssAfter, _ := rss(g.Process.Pid)
	g.Process.Signal(syscall.SIGTERM)
	g.Wait()
	st, err := os.Stat(filepath.Join(data, "gate.db"))
	check(err)

	// Steady state: a gate started on the loaded store.
	g, lines, _ = startGate(bin, args)
	for l := range lines {
		if strings.Contains(l, "connected to broker") {
			break
		}
	}
	time.Sleep(2 * time.Second)
	rssLoaded, _ := rss(g.Process.Pid)
	g.Process.Signal(syscall.SIGTERM)
	g.Wait()

	var b strings.Builder
	fmt.Fprintf(&b, "== gated %s\n", name)
	for i, w := range ws {
		var during []time.Duration
		for _, l := range lats {
			if !l.at.Before(w.recv) && !l.at.After(w.applied) {
				during = append(during, l.d)
			}
		}
		what := fmt.Sprintf("snapshot of %d tickets over 1", n)
		if i == 0 {
			fmt.Fprintf(&b, "gated start to applied %s\n", total.Round(time.Millisecond))
		} else {
			what = fmt.Sprintf("second snapshot replacing the %d", n)
		}
		fmt.Fprintf(&b, "%s: manifest to applied %s, apply/commit step %s; peak RSS so far %.1f MB\n",
			what, w.applied.Sub(w.recv).Round(time.Millisecond), w.took, float64(w.hwm)/1024)
		fmt.Fprintf(&b, "  scans meanwhile: %d, latency p50 %s p99 %s max %s\n", len(during), pct(during, 50), pct(during, 99), pct(during, 100))
	}
	var outside []time.Duration // the same scans with no snapshot arriving: the machine's own latency
	for _, l := range lats {
		in := false
		for _, w := range ws {
			in = in || !l.at.Before(w.recv) && !l.at.After(w.applied)
		}
		if !in {
			outside = append(outside, l.d)
		}
	}
	fmt.Fprintf(&b, "scans with no snapshot arriving: %d, latency p50 %s p99 %s max %s\n",
		len(outside), pct(outside, 50), pct(outside, 99), pct(outside, 100))
	fmt.Fprintf(&b, "gate.db %d bytes: %.1f bytes a ticket\n", st.Size(), float64(st.Size())/float64(n))
	fmt.Fprintf(&b, "gated RSS: %.1f MB at the end; %.1f MB restarted with the store loaded\n",
		float64(rssAfter)/1024, float64(rssLoaded)/1024)
	return b.String()
}

type scanLat struct {
	at time.Time // when the scan was sent
	d  time.Duration
}

// scanner feeds one code at a time to gated's stdin and times the
// decision line on its stdout (written after the commit).
type scanner struct {
	in  io.Writer
	out *bufio.Scanner
}

func (s *scanner) scan(code string, stop chan struct{}) []scanLat {
	var lats []scanLat
	for {
		select {
		case <-stop:
			return lats
		case <-time.After(5 * time.Millisecond):
		}
		t := time.Now()
		if _, err := fmt.Fprintln(s.in, code); err != nil {
			return lats
		}
		if !s.out.Scan() {
			return lats
		}
		lats = append(lats, scanLat{t, time.Since(t)})
	}
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*p/100)].Round(10 * time.Microsecond)
}

func copyDir(from, to string) {
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		log.Fatalf("cp %s: %v\n%s", from, err, out)
	}
}

func startGate(bin string, args []string) (*exec.Cmd, chan string, *scanner) {
	g := exec.Command(filepath.Join(bin, "gated"), args...)
	stdin, err := g.StdinPipe() // kept open: the gate waits for scans
	check(err)
	stdout, err := g.StdoutPipe()
	check(err)
	errp, err := g.StderrPipe()
	check(err)
	check(g.Start())
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(errp)
		for s.Scan() {
			select {
			case lines <- s.Text():
			default:
			}
		}
		close(lines)
	}()
	return g, lines, &scanner{in: stdin, out: bufio.NewScanner(stdout)}
}

// rss returns VmRSS and VmHWM in kB, and logs the anonymous and
// file-backed (the store's mmap) parts.
func rss(pid int) (int, int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	var r, h int
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "RssFile:") {
			log.Print(strings.Join(strings.Fields(l), " "))
		}
		if strings.HasPrefix(l, "VmRSS:") {
			fmt.Sscan(strings.TrimPrefix(l, "VmRSS:"), &r)
		}
		if strings.HasPrefix(l, "VmHWM:") {
			fmt.Sscan(strings.TrimPrefix(l, "VmHWM:"), &h)
		}
	}
	return r, h
}

func build(dir, name, src string) string {
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/gated", "./cmd/gatesync")
	cmd.Dir = src
	out, err := cmd.CombinedOutput()
	if err != nil {
		log.Fatalf("build (run from the repository root): %v\n%s", err, out)
	}
	return bin
}

func run(bin, name string, args ...string) string {
	out, err := exec.Command(filepath.Join(bin, name), args...).Output()
	if err != nil {
		log.Fatalf("%s %v: %v", name, args, err)
	}
	if len(out) > 4096 {
		return ""
	}
	return string(out)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
