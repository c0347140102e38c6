package scanner

import (
	"fmt"
	"net/url"
)

func newCameraFromURI(kind, uri, where string, q url.Values, env Env) (Source, error) {
	return nil, fmt.Errorf("not yet")
}
