//go:build !linux

package scanner

import (
	"errors"
	"image"
)

func openV4L2(dev string, max image.Point) (frames, error) {
	return nil, errors.New("camera: (V4L2) is only available on Linux; use mjpeg: or dir:")
}
