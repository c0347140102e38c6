package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"

	"github.com/blackjack/webcam"
)

// V4L2 pixel formats gated reads: YUYV gives luma without decoding (the
// grayscale fast path); MJPG costs a JPEG decode per frame.
var (
	fourccYUYV = webcam.PixelFormat('Y' | 'U'<<8 | 'Y'<<16 | 'V'<<24)
	fourccMJPG = webcam.PixelFormat('M' | 'J'<<8 | 'P'<<16 | 'G'<<24)
)

type v4l2Frames struct {
	cam    *webcam.Webcam
	format webcam.PixelFormat
	w, h   int
	max    image.Point
}

func openV4L2(dev string, max image.Point) (*v4l2Frames, error) {
	cam, err := webcam.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (is it a V4L2 capture device? the daemon's user needs the video group)", dev, err)
	}
	formats := cam.GetSupportedFormats()
	f := fourccYUYV
	if _, ok := formats[f]; !ok {
		f = fourccMJPG
		if _, ok := formats[f]; !ok {
			cam.Close()
			return nil, fmt.Errorf("%s offers neither YUYV nor MJPG frames", dev)
		}
	}
	got, w, h, err := cam.SetImageFormat(f, 1280, 720)
	if err != nil {
		cam.Close()
		return nil, fmt.Errorf("%s: set 1280x720: %w", dev, err)
	}
	if int(w) > max.X || int(h) > max.Y {
		cam.Close()
		return nil, fmt.Errorf("%s: frames of %dx%d are larger than max_frame %dx%d", dev, w, h, max.X, max.Y)
	}
	if err := cam.StartStreaming(); err != nil {
		cam.Close()
		return nil, fmt.Errorf("%s: start streaming: %w", dev, err)
	}
	return &v4l2Frames{cam: cam, format: got, w: int(w), h: int(h), max: max}, nil
}

func (v *v4l2Frames) Close() error { return v.cam.Close() }

func (v *v4l2Frames) next(ctx context.Context) ([]byte, int, int, error) {
	for ctx.Err() == nil {
		err := v.cam.WaitForFrame(1)
		var timeout *webcam.Timeout
		if errors.As(err, &timeout) {
			continue
		}
		if err != nil {
			return nil, 0, 0, err
		}
		// GetFrame, not ReadFrame: ReadFrame hands the buffer back to the
		// driver before we have read it.
		buf, idx, err := v.cam.GetFrame()
		if err != nil {
			return nil, 0, 0, err
		}
		lum, w, h, err := v.convert(buf)
		v.cam.ReleaseFrame(idx)
		return lum, w, h, err
	}
	return nil, 0, 0, ctx.Err()
}

func (v *v4l2Frames) convert(buf []byte) ([]byte, int, int, error) {
	if v.format == fourccYUYV {
		n := v.w * v.h
		if len(buf) < 2*n {
			return nil, 0, 0, fmt.Errorf("%w: short YUYV frame", errNoFrame)
		}
		lum := make([]byte, n)
		for i := range lum {
			lum[i] = buf[2*i]
		}
		return lum, v.w, v.h, nil
	}
	return decodeFrame(bytes.NewReader(buf), v.max)
}
