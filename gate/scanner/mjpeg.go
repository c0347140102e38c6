package scanner

import (
	"context"
	"fmt"
	"image"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
)

// maxJPEG bounds one MJPEG part; a 1080p JPEG is a few hundred KB.
const maxJPEG = 8 << 20

func openMJPEG(ctx context.Context, client *http.Client, addr string, max image.Point) (*mjpegFrames, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: status %s, content type %q: want 200 and multipart/x-mixed-replace (is this the camera's MJPEG stream address?)",
			addr, resp.Status, resp.Header.Get("Content-Type"))
	}
	// Some cameras write the boundary parameter with its leading dashes.
	boundary := strings.TrimPrefix(params["boundary"], "--")
	return &mjpegFrames{body: resp.Body, mr: &partReader{mr: multipart.NewReader(resp.Body, boundary)}, max: max}, nil
}

type partReader struct{ mr *multipart.Reader }

func (p *partReader) next() ([]byte, error) {
	part, err := p.mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("mjpeg stream: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(part, maxJPEG+1))
	if err != nil {
		return nil, fmt.Errorf("mjpeg stream: %w", err)
	}
	if len(b) > maxJPEG {
		return nil, fmt.Errorf("mjpeg stream: a frame over %d bytes", maxJPEG)
	}
	return b, nil
}
