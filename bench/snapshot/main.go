// Command snapshot measures a whitelist snapshot of N tickets (default
// 1,000,000) sent by gatesync serve to a gate over the embedded broker:
// the time to receive and apply it, the gate store's bytes a ticket, and
// gated's resident memory with it loaded.
//
//	go run ./bench/snapshot [-n 1000000]
//
// It builds gated and gatesync, issues the tickets at a fresh centre after
// the gate was provisioned with one ticket, so the gate's first hello gets
// a snapshot.
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
	"strings"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 1_000_000, "tickets")
	keep := flag.Bool("keep", false, "keep the temp directory")
	flag.Parse()
	dir, err := os.MkdirTemp("", "bench-snapshot")
	check(err)
	if !*keep {
		defer os.RemoveAll(dir)
	}
	bin := build(dir)
	centre, data := filepath.Join(dir, "centre"), filepath.Join(dir, "gate")
	run(bin, "gatesync", "init", "--dir", centre)
	run(bin, "gatesync", "issue", "--dir", centre, "--event", "E", "--count", "1")
	run(bin, "gatesync", "export", "--dir", centre, "--event", "E", "--out", filepath.Join(dir, "b.json"))
	run(bin, "gated", "provision", "--data", data, filepath.Join(dir, "b.json"))
	pass := strings.Fields(run(bin, "gatesync", "add-gate", "--dir", centre, "--venue", "v", "--gate", "g1"))
	start := time.Now()
	for left := *n; left > 0; left -= 100_000 {
		run(bin, "gatesync", "issue", "--dir", centre, "--event", "E", "--count", fmt.Sprint(min(left, 100_000)))
	}
	log.Printf("issued %d tickets at the centre in %s", *n, time.Since(start).Round(time.Millisecond))

	mqttPort, httpPort := freePort(), freePort()
	serve := exec.Command(filepath.Join(bin, "gatesync"), "serve", "--dir", centre, "--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", mqttPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort))
	serveLog, _ := os.Create(filepath.Join(dir, "serve.log"))
	serve.Stdout, serve.Stderr = serveLog, serveLog
	check(serve.Start())
	defer serve.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)

	gateArgs := []string{"run", "--data", data, "--gate", "g1", "--venue", "v", "--broker", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort),
		"--username", "g1", "--password", pass[len(pass)-1]}
	t0 := time.Now()
	g, lines := startGate(bin, gateArgs)
	var took string
	tookRe := regexp.MustCompile(`took=(\S+)`)
	for l := range lines {
		if strings.Contains(l, "snapshot applied") {
			took = tookRe.FindStringSubmatch(l)[1]
			break
		}
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "ignored downlink") {
			log.Printf("gated: %s", l)
		}
	}
	total := time.Since(t0)
	time.Sleep(time.Second)
	rssAfter, hwm := rss(g.Process.Pid)
	g.Process.Signal(syscall.SIGTERM)
	g.Wait()
	st, err := os.Stat(filepath.Join(data, "gate.db"))
	check(err)

	// Steady state: a gate started on the loaded store.
	g, lines = startGate(bin, gateArgs)
	for l := range lines {
		if strings.Contains(l, "connected to broker") {
			break
		}
	}
	time.Sleep(2 * time.Second)
	rssLoaded, _ := rss(g.Process.Pid)
	g.Process.Signal(syscall.SIGTERM)
	g.Wait()

	fmt.Printf("snapshot of %d tickets: gated start to applied %s (apply transaction %s)\n", *n, total.Round(time.Millisecond), took)
	fmt.Printf("gate.db %d bytes: %.1f bytes a ticket\n", st.Size(), float64(st.Size())/float64(*n))
	fmt.Printf("gated RSS: %.1f MB right after applying (peak %.1f MB); %.1f MB restarted with the store loaded\n",
		float64(rssAfter)/1024, float64(hwm)/1024, float64(rssLoaded)/1024)
}

func startGate(bin string, args []string) (*exec.Cmd, chan string) {
	g := exec.Command(filepath.Join(bin, "gated"), args...)
	stdin, err := g.StdinPipe() // kept open: the gate waits for scans
	check(err)
	_ = stdin
	errp, err := g.StderrPipe()
	check(err)
	g.Stdout = io.Discard
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
	return g, lines
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

func build(dir string) string {
	bin := filepath.Join(dir, "bin")
	out, err := exec.Command("go", "build", "-o", bin+"/", "./cmd/gated", "./cmd/gatesync").CombinedOutput()
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
	if len(out) > 200 {
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
