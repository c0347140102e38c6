// Command syncdrain measures how fast a gate's backlog reaches the centre
// after the gate connects, beside raw mosquitto_pub -> mosquitto_sub QoS 1
// throughput on the same mosquitto broker.
//
//	go run ./bench/syncdrain [-n 100000]
//
// The backlog is written into a provisioned gate store directly (fast,
// without fsync); then gatesync serve (on the external broker) and gated
// run start, and the clock runs from gated's "connected to broker" until
// the centre's API reports every entry stored.
package main

import (
	"bufio"
	"context"
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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/mqtttest"
	"github.com/gated-dev/gated/verify"
)

// tb lets mqtttest run outside a test.
type tb struct{ dir string }

func (tb) Helper()                   {}
func (tb) Fatalf(f string, a ...any) { log.Fatalf(f, a...) }
func (tb) Skipf(f string, a ...any)  { log.Fatalf(f, a...) }
func (tb) Cleanup(func())            {}
func (t tb) TempDir() string         { d, _ := os.MkdirTemp(t.dir, "m"); return d }
func check(err error, what ...any) {
	if err != nil {
		log.Fatal(append(what, err)...)
	}
}

func main() {
	n := flag.Int("n", 100_000, "backlog entries")
	admit := flag.Bool("admit", false, "the backlog is first admissions of n tickets, with the codes the centre checks, instead of denials")
	flag.Parse()
	dir, err := os.MkdirTemp("", "bench-syncdrain")
	check(err)
	defer os.RemoveAll(dir)
	m := mqtttest.New(tb{dir}, mqtttest.Options{})
	m.Start(tb{dir})
	defer m.Stop()

	bin := filepath.Join(dir, "bin")
	out, err := exec.Command("go", "build", "-o", bin+"/", "./cmd/gated", "./cmd/gatesync").CombinedOutput()
	check(err, "build (run from the repository root):", string(out))
	centre, data := filepath.Join(dir, "centre"), filepath.Join(dir, "gate")
	run := func(name string, args ...string) string {
		out, err := exec.Command(filepath.Join(bin, name), args...).Output()
		check(err, name, args, string(out))
		return string(out)
	}
	run("gatesync", "init", "--dir", centre)
	count := 1
	if *admit {
		count = *n
	}
	codes := strings.Split(strings.TrimSpace(run("gatesync", "issue", "--dir", centre, "--event", "E", "--count", fmt.Sprint(count))), "\n")
	run("gatesync", "export", "--dir", centre, "--event", "E", "--out", filepath.Join(dir, "b.json"))
	run("gated", "provision", "--data", data, filepath.Join(dir, "b.json"))
	if !*admit {
		codes = nil
	}
	avg := backlog(data, *n, codes)

	rawRate := raw(m, dir, *n, avg)

	httpPort := freePort()
	serve := exec.Command(filepath.Join(bin, "gatesync"), "serve", "--dir", centre, "--broker", m.URL, "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort))
	check(serve.Start())
	defer serve.Process.Signal(syscall.SIGTERM)
	time.Sleep(time.Second)
	tok, _ := os.ReadFile(filepath.Join(centre, "api.token"))
	g := exec.Command(filepath.Join(bin, "gated"), "run", "--data", data, "--gate", "g1", "--venue", "v", "--broker", m.URL)
	_, _ = g.StdinPipe()
	errp, _ := g.StderrPipe()
	check(g.Start())
	defer g.Process.Signal(syscall.SIGTERM)
	sc := bufio.NewScanner(errp)
	for sc.Scan() && !strings.Contains(sc.Text(), "connected to broker") {
	}
	t0 := time.Now()
	go io.Copy(io.Discard, errp)
	for {
		if storedTo(httpPort, strings.TrimSpace(string(tok))) >= uint64(*n) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	el := time.Since(t0)
	syncRate := float64(*n) / el.Seconds()
	fmt.Printf("raw mosquitto_pub -> mosquitto_sub, QoS 1, %d messages of %d bytes: %.0f msg/s\n", *n, avg, rawRate)
	fmt.Printf("gate backlog of %d entries drained to the centre after connect: %s, %.0f entries/s (%.2f of raw)\n",
		*n, el.Round(time.Millisecond), syncRate, syncRate/rawRate)
}

// backlog writes n journal records into the gate store and returns their
// average JSON size: admissions of codes when there are codes, else
// denials.
func backlog(data string, n int, codes []string) int {
	s, err := cache.Open(data, &cache.Options{NoSync: true, MaxBatch: 1000})
	check(err)
	defer s.Close()
	st, err := s.State()
	check(err)
	v := verify.NewVerifier(verify.Policy{Event: st.Event}, st.Trust)
	var wg sync.WaitGroup
	var size, count int
	var mu sync.Mutex
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				sc := cache.Scan{At: time.Now(), Gate: "g1", Scanner: "bench",
					Pre: verify.Result{Reason: verify.ReasonMalformed, Detail: "bench entry: not a gated code"}}
				if codes != nil {
					tok, err := verify.Parse([]byte(codes[i]))
					check(err)
					sc.Code, sc.Checked = codes[i], v.Check(tok, sc.At, nil)
				}
				e, err := s.Record(context.Background(), v, sc)
				check(err)
				b, _ := json.Marshal(e)
				mu.Lock()
				size += len(b)
				count++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return size / count
}

// raw publishes n messages of size bytes with mosquitto_pub -l at QoS 1
// and returns messages a second until mosquitto_sub has them all. The
// lines go in runs of 20,000 a mosquitto_pub: mosquitto 2.0.11 disconnects
// a -l publisher "due to out of memory" somewhere past 30,000 queued
// lines, dropping the rest.
func raw(m *mqtttest.Mosquitto, dir string, n, size int) float64 {
	const run = 20_000
	f := filepath.Join(dir, "raw.txt")
	line := strings.Repeat("x", size-1) + "\n"
	check(os.WriteFile(f, []byte(strings.Repeat(line, run)), 0o600))
	port := fmt.Sprint(m.Port)
	n = (n + run - 1) / run * run
	sub := exec.Command("mosquitto_sub", "-p", port, "-q", "1", "-t", "bench/raw", "-C", fmt.Sprint(n), "-i", "bench-sub")
	sub.Stdout = io.Discard
	check(sub.Start())
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	for i := 0; i < n; i += run {
		in, _ := os.Open(f)
		pub := exec.Command("mosquitto_pub", "-p", port, "-q", "1", "-t", "bench/raw", "-l", "-i", "bench-pub")
		pub.Stdin = in
		check(pub.Run())
		in.Close()
	}
	done := make(chan error)
	go func() { done <- sub.Wait() }()
	select {
	case err := <-done:
		check(err)
	case <-time.After(time.Minute):
		log.Fatal("mosquitto_sub did not get every raw message")
	}
	return float64(n) / time.Since(t0).Seconds()
}

func storedTo(port int, token string) uint64 {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/api/v1/gates", port), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer r.Body.Close()
	var gs []struct {
		StoredTo uint64 `json:"stored_to"`
	}
	json.NewDecoder(r.Body).Decode(&gs)
	if len(gs) == 0 {
		return 0
	}
	return gs[0].StoredTo
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
