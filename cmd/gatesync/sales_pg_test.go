package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/centre/wxpay/wxpaytest"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestServeSalesOnPostgres runs the real gatesync serve with --store
// postgres:// and a sales configuration that names no store: the sales
// books go to PostgreSQL, not to DIR/sales.db. A buyer signs in, orders,
// pays (WeChat Pay's signed notification) and gets a ticket; after a
// restart of gatesync the same sign-in still sees the ticket and the stock
// is still one down.
func TestServeSalesOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds gatesync, starts PostgreSQL")
	}
	bins := webBins(t)
	bin := filepath.Join(bins, "gatesync")
	cl := pgtest.Start(t, pgtest.Options{})
	dsn := cl.Database(t, "salese2e")
	dir := t.TempDir()
	cdir := filepath.Join(dir, "centre")
	webRun(t, bin, "init", "--dir", cdir)

	pay := wxpaytest.NewPayServer(t)
	login := wxpaytest.NewLoginServer(t, pay.AppID, "app-secret")
	keyDER, err := x509.MarshalPKCS8PrivateKey(pay.MchKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile := filepath.Join(dir, "apiclient_key.pem"), filepath.Join(dir, "platform.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pay.PlatformCert.Raw}), 0o644)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	doors := time.Now().Add(10 * 24 * time.Hour).UTC().Truncate(time.Hour)
	cfg := map[string]any{
		"appid": pay.AppID, "mchid": pay.MchID,
		"real_name_hmac_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
		"real_name_key":      "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f",
		"events": []any{map[string]any{"id": "gig", "name": "Gig", "doors_open": doors, "ends": doors.Add(4 * time.Hour),
			"ticket_types": []any{map[string]any{"id": "ga", "name": "General", "tiers": []any{
				map[string]any{"id": "std", "name": "Standard", "price_fen": 5000, "quota": 5}}}}}},
		"wechat": map[string]any{"app_secret": "app-secret", "mch_cert_serial": pay.MchSerial, "mch_key_file": keyFile,
			"apiv3_key": pay.APIv3Key, "platform_cert_files": []string{certFile},
			"notify_url": base + "/api/v1/wxpay/notify", "refund_notify_url": base + "/api/v1/wxpay/refund-notify",
			"pay_base_url": pay.URL, "login_base_url": login.URL},
	}
	cb, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "sales.json")
	if err := os.WriteFile(cfgFile, cb, 0o600); err != nil {
		t.Fatal(err)
	}

	start := func() (*exec.Cmd, *lockedbuf.Buffer) {
		t.Helper()
		cmd := exec.Command(bin, "serve", "--dir", cdir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--store", dsn, "--sales-config", cfgFile)
		log := &lockedbuf.Buffer{}
		cmd.Stderr = log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitUntil(t, 15*time.Second, "gatesync serve answers", func() bool {
			r, err := http.Get(base + "/api/v1/events")
			if err == nil {
				r.Body.Close()
			}
			return err == nil && r.StatusCode == 200
		})
		return cmd, log
	}
	call := func(method, path, token string, body any, want int, out any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != want {
			t.Fatalf("%s %s: %d %s; want %d", method, path, r.StatusCode, b, want)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: %v in %s", method, path, err, b)
			}
		}
	}
	remaining := func() int {
		t.Helper()
		var ev sales.EventView
		call("GET", "/api/v1/events/gig", "", nil, 200, &ev)
		return ev.Types[0].Tiers[0].Remaining
	}

	serve, log := start()
	var lr sales.LoginResponse
	call("POST", "/api/v1/login", "", map[string]string{"code": login.Code("o-buyer")}, 200, &lr)
	var o sales.OrderView
	call("POST", "/api/v1/orders", lr.Token, sales.OrderRequest{Event: "gig", Type: "ga", Tier: "std", Quantity: 1}, 201, &o)
	var rp wxpay.RequestPayment
	call("POST", "/api/v1/orders/"+o.No+"/pay", lr.Token, nil, 200, &rp)
	res, err := pay.Pay(o.No)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := pay.Notify("TRANSACTION.SUCCESS", res, time.Now()).Send(http.DefaultClient, base+"/api/v1/wxpay/notify"); err != nil || st != 204 {
		t.Fatalf("payment notification: %d %v\n%s", st, err, log.String())
	}
	var ts []sales.TicketView
	call("GET", "/api/v1/tickets", lr.Token, nil, 200, &ts)
	if len(ts) != 1 || ts[0].Code == "" || ts[0].State != sales.TicketValid {
		t.Fatalf("tickets after paying: %+v\n%s", ts, log.String())
	}
	if n := remaining(); n != 4 {
		t.Fatalf("remaining after one sale: %d; want 4", n)
	}

	// The books are in PostgreSQL, and no sales.db was made.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var orders, tickets int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE bucket = 'orders'), count(*) FILTER (WHERE bucket = 'tickets') FROM `+sales.PostgresTable).Scan(&orders, &tickets); err != nil {
		t.Fatal(err)
	}
	if orders != 1 || tickets != 1 {
		t.Errorf("%s holds %d orders and %d tickets; want 1 and 1", sales.PostgresTable, orders, tickets)
	}
	if _, err := os.Stat(filepath.Join(cdir, "sales.db")); !os.IsNotExist(err) {
		t.Errorf("sales.db in the centre directory: %v; the books belong in PostgreSQL", err)
	}

	// A restart reads the same books.
	serve.Process.Signal(syscall.SIGTERM)
	serve.Wait()
	start()
	var again []sales.TicketView
	call("GET", "/api/v1/tickets", lr.Token, nil, 200, &again)
	if len(again) != 1 || again[0].ID != ts[0].ID || again[0].Code != ts[0].Code {
		t.Fatalf("tickets after a restart: %+v; want %+v", again, ts)
	}
	if n := remaining(); n != 4 {
		t.Fatalf("remaining after a restart: %d; want 4", n)
	}
}
