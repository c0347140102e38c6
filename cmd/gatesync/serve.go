package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/dashboard"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/ticketpage"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/sdnotify"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

func cmdServe(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("serve")
	broker := fs.String("broker", "embedded", "embedded (a broker inside gatesync) or an external broker URL tcp://HOST:PORT, ssl://HOST:PORT")
	mqttListen := fs.String("mqtt-listen", "127.0.0.1:1883", "embedded broker: MQTT listen address")
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP API listen address (loopback by default)")
	anon := fs.Bool("allow-anonymous", false, "embedded broker: let clients without credentials in, unrestricted (development only)")
	user := fs.String("broker-username", "", "external broker: gatesync's username")
	pass := fs.String("broker-password", "", "external broker: gatesync's password (or GATESYNC_BROKER_PASSWORD)")
	ca := fs.String("tls-ca", "", "external broker: CA file to verify it; embedded: CA of client certificates to require")
	cert := fs.String("tls-cert", "", "external broker: client certificate; embedded: the listener's certificate (makes it TLS)")
	key := fs.String("tls-key", "", "key of --tls-cert")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	salesConfig := fs.String("sales-config", "", "sell tickets to the WeChat mini program: a sales configuration file (JSON, see docs/sales.md)")
	store := fs.String("store", "", "books of entries, gates and conflicts: bbolt (in DIR/central.db) or a postgres://USER@HOST/DB URL (default: GATESYNC_STORE, else bbolt; see docs/scaleout.md)")
	clientID := fs.String("client-id", "gatesync", "external broker: MQTT client id (its session keeps messages while gatesync is down); unique per instance")
	share := fs.String("share-group", "", "external broker: take gate entries through the shared subscription $share/GROUP/..., so several instances on one --store postgres split them")
	httpsCert := fs.String("https-cert", "", "serve --listen over HTTPS with this certificate (PEM chain; re-read when the file changes, so a renewal needs no restart): the ticket page's WebCrypto needs a secure origin")
	httpsKey := fs.String("https-key", "", "key of --https-cert")
	ingestOnly := fs.Bool("ingest-only", false, "serve gate entries only (a second instance beside the primary; needs --share-group); the API refuses issue and revoke")
	config := fs.String("config", "", "YAML file of these settings, keys the flag names with _ for - (mqtt_listen: for --mqtt-listen; see deploy/gatesync.yaml); flags given override it")
	if err := parseWithConfig(fs, dir, config, args); err != nil {
		return err
	}
	if *store == "" {
		*store = os.Getenv("GATESYNC_STORE")
	}
	if err := checkScaleOut(*store, *broker, *clientID, *share, *ingestOnly, *salesConfig); err != nil {
		return err
	}
	if *pass == "" {
		*pass = os.Getenv("GATESYNC_BROKER_PASSWORD")
	}
	log := cli.Logger(os.Stderr, *level).With("component", "gatesync")
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	token, err := centre.CreateAPIToken(*dir) // directories made before the API existed get one now
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if isPostgres(*store) {
		pg, err := pgstore.Open(ctx, *store, pgstore.Options{})
		if err != nil {
			return fmt.Errorf("--store: %w", err)
		}
		defer pg.Close()
		c.SetIngestStore(pg)
		log.Info("books of entries in PostgreSQL", "share_group", *share, "ingest_only", *ingestOnly)
	}

	var bus centre.Bus
	var known func(venue, gate string) bool // embedded: only its gate logins are booked
	var kick func(gate string) int
	if *broker == "embedded" {
		var tc *tls.Config
		if *cert != "" {
			if tc, err = serverTLS(*cert, *key, *ca); err != nil {
				return err
			}
		}
		e, err := centre.StartEmbedded(centre.EmbeddedOptions{Addr: *mqttListen, TLS: tc, Auth: c.CheckGateUser,
			CertAuth: c.GateVenue, AllowAnonymous: *anon, Logger: log.With("component", "broker")})
		if err != nil {
			return err
		}
		defer e.Close()
		bus = e
		kick = e.Kick
		if !*anon { // anonymous gates (development) have no login to check
			known = c.GateLogin
		}
		log.Info("embedded broker listening", "addr", *mqttListen, "tls", tc != nil, "anonymous", *anon)
	} else {
		if !strings.Contains(*broker, "://") {
			return cli.Usagef("--broker %q: use embedded or a URL like tcp://HOST:1883", *broker)
		}
		var tc *tls.Config
		if *ca != "" || *cert != "" {
			if tc, err = clientTLS(*ca, *cert, *key); err != nil {
				return err
			}
		}
		x := centre.DialExternal(centre.ExternalOptions{URL: *broker, ClientID: *clientID, CleanSession: *share != "", Username: *user, Password: *pass, TLS: tc,
			Logger: log.With("component", "mqtt")})
		defer x.Close()
		bus = x
		log.Info("using external broker", "broker", *broker)
	}
	srv := centre.NewServer(c, bus, centre.ServerOptions{Logger: log.With("component", "sync"), ShareGroup: *share, IngestOnly: *ingestOnly,
		KnownGate: known})
	// A locked or removed gate: off the embedded broker at once, and its
	// retained status cleared so it is not booked again from it.
	c.OnGateLogin(func(venue, gate string) {
		if kick != nil && kick(gate) > 0 {
			log.Warn("gate disconnected: its login was locked or removed", "venue", venue, "gate", gate)
		}
		if err := bus.Publish(wire.GateTopic(venue, gate, wire.KindStatus), nil, true); err != nil {
			log.Warn("clear the gate's retained status", "venue", venue, "gate", gate, "err", err)
		}
	})
	if (*httpsCert == "") != (*httpsKey == "") {
		return cli.Usagef("--https-cert and --https-key go together")
	}
	scheme := "http"
	var certs *certReloader
	if *httpsCert != "" {
		if certs, err = newCertReloader(*httpsCert, *httpsKey, log.With("component", "https")); err != nil {
			return cli.Usagef("--https-cert/--https-key: %v", err)
		}
		scheme = "https"
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("HTTP API: %w", err)
	}
	if certs != nil {
		ln = tls.NewListener(ln, &tls.Config{GetCertificate: certs.get, MinVersion: tls.VersionTLS12})
	}
	var handler http.Handler = centre.NewAPI(c, token, log.With("component", "api"))
	if *ingestOnly {
		handler = readOnlyAPI(handler)
	}
	var runSales func(context.Context) error
	if *salesConfig != "" {
		fc, err := sales.LoadFileConfig(*salesConfig)
		if err != nil {
			return cli.Usagef("--sales-config: %v", err)
		}
		if fc.Store == "" && isPostgres(*store) {
			// Books in PostgreSQL: the sales books go with them, unless
			// the sales configuration names a store of its own.
			fc.Store = *store
		}
		ss, closeSales, err := sales.Open(ctx, fc, *dir, sales.CentreIssuer{C: c}, log)
		if err != nil {
			return fmt.Errorf("sales: %w", err)
		}
		defer closeSales()
		// The sales routes share the tree with the API; everything else
		// is the API's.
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		ss.Register(mux)
		handler = mux
		runSales = ss.Run
		log.Info("sales enabled", "config", *salesConfig, "events", len(fc.Events))
	}
	// Every goroutine started below is waited for before the deferred
	// closes above run: the context ends first, then the HTTP server
	// closes, then they are waited for.
	var wg sync.WaitGroup
	var hs *http.Server
	defer func() {
		stop()
		if hs != nil {
			hs.Close()
		}
		wg.Wait()
	}()
	if runSales != nil {
		wg.Go(func() {
			if err := runSales(ctx); err != nil && ctx.Err() == nil {
				log.Error("sales stopped", "err", err)
			}
		})
	}
	// The ticket holder's page (not on ingest-only instances: binding a
	// phone re-issues) and the ops dashboard share the listener.
	web := http.NewServeMux()
	web.Handle("/", handler)
	if !*ingestOnly {
		tp, err := ticketpage.New(c, ticketpage.Options{Dir: *dir, Token: token, Logger: log.With("component", "ticketpage")})
		if err != nil {
			return err
		}
		tp.Register(web)
	}
	dash, err := dashboard.New(c, dashboard.Options{Token: token, Logger: log.With("component", "dashboard")})
	if err != nil {
		return err
	}
	dash.Register(web)
	wg.Go(func() { dash.Run(ctx) })
	handler = web
	hs = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP API stopped", "err", err)
			stop()
		}
	})
	log.Info("gatesync serving", "dir", *dir, "api", scheme+"://"+ln.Addr().String(), "root", verify.Fingerprint(c.RootPublic()))
	// gatesync.service is Type=notify: READY, watchdog pings, STOPPING.
	sd := sdnotify.New(log.With("component", "systemd"))
	wg.Go(func() { sd.Serve(ctx, "serving "+ln.Addr().String(), nil) })
	err = srv.Run(ctx)
	sd.Stopping()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	log.Info("gatesync stopped")
	return err
}

func serverTLS(cert, key, ca string) (*tls.Config, error) {
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, cli.Usagef("--tls-cert/--tls-key: %v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	if ca != "" {
		pool, err := certPool(ca)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

func clientTLS(ca, cert, key string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pool, err := certPool(ca)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, cli.Usagef("--tls-cert/--tls-key: %v", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

func certPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.Usagef("--tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, cli.Usagef("--tls-ca %s: no PEM certificates in it", path)
	}
	return pool, nil
}

func cmdAddGate(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("add-gate")
	venue := fs.String("venue", "", "venue id (required)")
	gate := fs.String("gate", "", "gate id (required): also its broker username")
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	if *venue == "" || *gate == "" {
		return cli.Usagef("--venue VENUE and --gate GATE are required")
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	pw, err := c.AddGateUser(*venue, *gate)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	fmt.Fprintf(stdout, "gate %s at venue %s: username %s password %s\n", *gate, *venue, *gate, pw)
	return nil
}

// client is the --server side of issue and revoke.
type client struct {
	base, token string
	hc          *http.Client
}

func serverFlags(fs *flag.FlagSet) (server, token *string) {
	server = fs.String("server", "", "talk to a running gatesync serve at this URL (e.g. http://127.0.0.1:8080) instead of opening --dir")
	token = fs.String("token", "", "API token for --server (default: GATESYNC_TOKEN, or DIR/api.token when --dir is given)")
	return
}

func newClient(server, token, dir string) (*client, error) {
	if token == "" {
		token = os.Getenv("GATESYNC_TOKEN")
	}
	if token == "" && dir != "" {
		t, err := centre.ReadAPIToken(dir)
		if err != nil {
			return nil, cli.Usagef("no API token: pass --token, set GATESYNC_TOKEN, or --dir with %s (%v)", filepath.Join(dir, centre.APITokenFile), err)
		}
		token = t
	}
	if token == "" {
		return nil, cli.Usagef("no API token: pass --token, set GATESYNC_TOKEN, or --dir DIR")
	}
	return &client{base: strings.TrimRight(server, "/"), token: token, hc: &http.Client{Timeout: 5 * time.Minute}}, nil
}

func (c *client) post(path string, body, out any) error {
	return c.call(http.MethodPost, path, body, out)
}

func (c *client) call(method, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(b))
	if err != nil {
		return cli.Usagef("--server: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("gatesync server: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e centre.APIError
		json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return fmt.Errorf("gatesync server: %s: %s", resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// certReloader serves the certificate in a pair of PEM files and loads
// them again when either changes, so a renewal (certbot, acme.sh) takes
// effect at the next handshake. A pair that fails to load keeps the
// previous one serving.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	mu                sync.Mutex
	cert              *tls.Certificate
	stamp             string
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// fileStamp changes when either file is replaced or rewritten.
func (r *certReloader) fileStamp() string {
	var b strings.Builder
	for _, f := range []string{r.certFile, r.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

func (r *certReloader) load() error {
	stamp := r.fileStamp()
	// The stamp moves on even when the pair fails to load, so a bad pair
	// is reported once, and loaded again when the files change next.
	r.stamp = stamp
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert = &c
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fileStamp() != r.stamp {
		if err := r.load(); err != nil {
			r.log.Warn("new HTTPS certificate does not load; still serving the previous one", "cert", r.certFile, "err", err)
		} else {
			r.log.Info("HTTPS certificate reloaded", "cert", r.certFile)
		}
	}
	return r.cert, nil
}
