//go:build !linux

package scanner

import "errors"

func openV4L2(dev string) (frames, error) {
	return nil, errors.New("camera: (V4L2) is only available on Linux; use mjpeg: or dir:")
}
