package dashboard_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/dashboard"
)

// Serve the dashboard of an open centre until interrupted.
func Example() {
	c, err := centre.Open("/srv/centre", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	token, err := centre.ReadAPIToken("/srv/centre")
	if err != nil {
		log.Fatal(err)
	}
	d, err := dashboard.New(c, dashboard.Options{Token: token})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go d.Run(ctx)
	mux := http.NewServeMux()
	d.Register(mux)
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: mux}
	go func() { <-ctx.Done(); srv.Close() }()
	log.Print(srv.ListenAndServe())
}
