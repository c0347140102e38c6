# Builds and packages gated. Needs Go; `make deb` fetches nfpm through the
# Go module proxy; `make arm64` needs gcc-aarch64-linux-gnu (Debian).
#
#   make build        both binaries for this machine, cgo on (USB HID)  -> dist/linux_$(GOHOSTARCH)/
#   make arm64        both binaries for linux/arm64 gate boxes, cgo on -> dist/linux_arm64/
#   make deb          dist/gated_VERSION_amd64.deb (this machine's arch)
#   make deb-arm64    dist/gated_VERSION_arm64.deb
#   make test         go vet and the race-enabled test suite
#   make clean

DIST      ?= dist
VERSION   ?= 0.1.0+git.$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
NFPM      ?= go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
ARM64_CC  ?= aarch64-linux-gnu-gcc
GOHOSTARCH := $(shell go env GOHOSTARCH)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"

.PHONY: build arm64 deb deb-arm64 stage test clean

build:
	CGO_ENABLED=1 GOOS=linux GOARCH=$(GOHOSTARCH) go build $(GOFLAGS_BUILD) -o $(DIST)/linux_$(GOHOSTARCH)/gated ./cmd/gated
	CGO_ENABLED=1 GOOS=linux GOARCH=$(GOHOSTARCH) go build $(GOFLAGS_BUILD) -o $(DIST)/linux_$(GOHOSTARCH)/gatesync ./cmd/gatesync

# HID scanners need cgo (github.com/karalabe/usb), hence the cross compiler.
arm64:
	@command -v $(ARM64_CC) >/dev/null || { echo "make arm64: $(ARM64_CC) not found: apt-get install gcc-aarch64-linux-gnu" >&2; exit 1; }
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) go build $(GOFLAGS_BUILD) -o $(DIST)/linux_arm64/gated ./cmd/gated
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) go build $(GOFLAGS_BUILD) -o $(DIST)/linux_arm64/gatesync ./cmd/gatesync

# The udev rules are staged: every systemd/*.rules goes in, and none is
# not an error while the scanner rules are being written.
stage:
	rm -rf $(DIST)/stage && mkdir -p $(DIST)/stage/udev
	cp systemd/*.rules $(DIST)/stage/udev/ 2>/dev/null || echo "make: no systemd/*.rules: the package has no udev rules" >&2

deb: build stage
	GOARCH=$(GOHOSTARCH) VERSION=$(VERSION) BIN=$(DIST)/linux_$(GOHOSTARCH) STAGE=$(DIST)/stage $(NFPM) package --packager deb --config packaging/nfpm.yaml --target $(DIST)/

deb-arm64: arm64 stage
	GOARCH=arm64 VERSION=$(VERSION) BIN=$(DIST)/linux_arm64 STAGE=$(DIST)/stage $(NFPM) package --packager deb --config packaging/nfpm.yaml --target $(DIST)/

test:
	go vet ./...
	go test -race ./...

clean:
	rm -rf $(DIST)
