// Package qr renders ticket codes as QR symbols (and reads them back).
// Codes are Base45, so gozxing picks the alphanumeric mode by itself.
package qr

import (
	"fmt"
	"image"
	"image/png"
	"os"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/makiuchi-d/gozxing/qrcode/decoder"
	"github.com/makiuchi-d/gozxing/qrcode/encoder"
)

// Level is the error-correction level ticket QRs use: M survives a
// scratched phone screen and keeps static tickets at version 7 or below.
var Level = decoder.ErrorCorrectionLevel_M

// Version returns the QR version (1-40) that encodes text at level M, and
// whether the whole text is in alphanumeric mode.
func Version(text string) (version int, alphanumeric bool, err error) {
	c, err := encoder.Encoder_encodeWithoutHint(text, Level)
	if err != nil {
		return 0, false, fmt.Errorf("qr encode: %w", err)
	}
	return c.GetVersion().GetVersionNumber(), c.GetMode() == decoder.Mode_ALPHANUMERIC, nil
}

// Image renders text as a QR image of about size pixels with a quiet zone.
func Image(text string, size int) (image.Image, error) {
	hints := map[gozxing.EncodeHintType]any{
		gozxing.EncodeHintType_ERROR_CORRECTION: Level,
		gozxing.EncodeHintType_MARGIN:           4,
	}
	m, err := qrcode.NewQRCodeWriter().Encode(text, gozxing.BarcodeFormat_QR_CODE, size, size, hints)
	if err != nil {
		return nil, fmt.Errorf("qr encode: %w", err)
	}
	return m, nil
}

// WritePNG renders text into a PNG file.
func WritePNG(path, text string, size int) error {
	img, err := Image(text, size)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Decode reads one QR code from an image.
func Decode(img image.Image) (string, error) {
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", err
	}
	r, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_TRY_HARDER: true})
	if err != nil {
		return "", err
	}
	return r.GetText(), nil
}
