// Package packaging holds what builds the gated Debian package: the nfpm
// config (nfpm.yaml), the maintainer scripts and the sysusers.d file. The
// Makefile drives it (make deb, make deb-arm64); its tests build the real
// package and the arm64 binaries and look inside them.
package packaging
