package scanner

import "github.com/karalabe/usb"

// usbBus is the real HID bus through github.com/karalabe/usb (hidapi over
// libusb on Linux). Opening a device detaches its kernel driver, so a
// keyboard-wedge scanner stops typing into the console while gated holds it.
type usbBus struct{}

// DefaultHIDBus returns the real bus, or nil when this build has none
// (karalabe/usb needs cgo).
func DefaultHIDBus() HIDBus {
	if !usb.Supported() {
		return nil
	}
	return usbBus{}
}

func (usbBus) Enumerate(vid, pid uint16) ([]HIDInfo, error) {
	infos, err := usb.EnumerateHid(vid, pid)
	if err != nil {
		return nil, err
	}
	out := make([]HIDInfo, 0, len(infos))
	for _, in := range infos {
		out = append(out, HIDInfo{Path: in.Path, VID: in.VendorID, PID: in.ProductID, Interface: in.Interface,
			Manufacturer: in.Manufacturer, Product: in.Product, Serial: in.Serial, raw: in})
	}
	return out, nil
}

func (usbBus) Open(info HIDInfo) (HIDDevice, error) {
	in, ok := info.raw.(usb.DeviceInfo)
	if !ok {
		return nil, ErrHIDUnavailable
	}
	return in.Open()
}
