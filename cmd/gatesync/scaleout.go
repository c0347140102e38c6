package main

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/internal/cli"
)

// Several gatesync serve instances sharing ingest (docs/scaleout.md).

func isPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// checkScaleOut refuses combinations of the scale-out flags that would
// split the books or make instances fight over one broker session.
func checkScaleOut(store, broker, clientID, share string, ingestOnly bool, salesConfig string) error {
	switch {
	case store != "" && store != "bbolt" && !isPostgres(store):
		return cli.Usagef("--store %q: use bbolt or a URL like postgres://gatesync@db.example/gatesync", store)
	case share != "" && !isPostgres(store):
		return cli.Usagef("--share-group: instances that split the entries must share the books: add --store postgres://...")
	case share != "" && broker == "embedded":
		return cli.Usagef("--share-group: instances share an external broker: add --broker tcp://HOST:1883")
	case share != "" && clientID == "gatesync":
		return cli.Usagef("--share-group: give each instance its own --client-id (e.g. gatesync-a, gatesync-b); with one id they log each other out")
	case strings.ContainsAny(share, "/+#"):
		return cli.Usagef("--share-group %q: no '/', '+' or '#'", share)
	case ingestOnly && share == "":
		return cli.Usagef("--ingest-only: the instance must share the entries with the primary: add --share-group GROUP")
	case ingestOnly && salesConfig != "":
		return cli.Usagef("--ingest-only: sales issue tickets; run --sales-config on the primary")
	}
	return nil
}

// readOnlyAPI refuses the API's writes (issue, revoke) on an ingest-only
// instance: its centre directory is not the primary's.
func readOnlyAPI(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(centre.APIError{Error: "this gatesync is --ingest-only: issue and revoke at the primary instance"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
