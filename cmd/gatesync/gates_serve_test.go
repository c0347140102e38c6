package main

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/internal/lockedbuf"
)

// TestServeLockGate runs the real gatesync serve with its embedded broker:
// lock-gate --server disconnects a connected gate at once and its login is
// refused until unlock-gate; remove-gate removes it for good.
func TestServeLockGate(t *testing.T) {
	bin := filepath.Join(webBins(t), "gatesync")
	dir := t.TempDir()
	webRun(t, bin, "init", "--dir", dir)
	pass := map[string]string{}
	for _, g := range []string{"g1", "g2"} {
		f := strings.Fields(webRun(t, bin, "add-gate", "--dir", dir, "--venue", "arena", "--gate", g))
		pass[g] = f[len(f)-1]
	}
	mq, api := freePort(t), freePort(t)
	serve := exec.Command(bin, "serve", "--dir", dir, "--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", mq), "--listen", fmt.Sprintf("127.0.0.1:%d", api))
	var log lockedbuf.Buffer
	serve.Stderr = &log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Process.Kill(); serve.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", mq)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	connect := func(g string) (chan struct{}, error) {
		lost := make(chan struct{})
		var once sync.Once
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mq)).SetClientID(centre.GateClientID("arena", g)).
			SetUsername(g).SetPassword(pass[g]).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) })
		cl := paho.NewClient(o)
		tok := cl.Connect()
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect %s: %v", g, tok.Error())
		}
		t.Cleanup(func() { cl.Disconnect(0) })
		return lost, nil
	}
	lost1, err := connect("g1")
	if err != nil {
		t.Fatal(err)
	}
	lost2, err := connect("g2")
	if err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("http://127.0.0.1:%d", api)
	webRun(t, bin, "lock-gate", "--server", server, "--dir", dir, "--venue", "arena", "--gate", "g1")
	select {
	case <-lost1:
	case <-time.After(5 * time.Second):
		t.Fatal("lock-gate left g1 connected")
	}
	if _, err := connect("g1"); err == nil {
		t.Fatal("a locked gate logged in")
	}
	webRun(t, bin, "unlock-gate", "--server", server, "--dir", dir, "--venue", "arena", "--gate", "g1")
	if _, err := connect("g1"); err != nil {
		t.Fatalf("after unlock-gate: %v", err)
	}
	webRun(t, bin, "remove-gate", "--server", server, "--dir", dir, "--venue", "arena", "--gate", "g1")
	if _, err := connect("g1"); err == nil {
		t.Fatal("a removed gate logged in")
	}
	select {
	case <-lost2:
		t.Fatal("g2 was disconnected too")
	default:
	}
	if !strings.Contains(log.String(), "gate disconnected") || !strings.Contains(log.String(), "broker login refused") {
		t.Errorf("serve's log lacks the lock and the refusals:\n%s", log.String())
	}
}
