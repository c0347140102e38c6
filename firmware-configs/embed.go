// Package firmwareconfigs holds one YAML file for each scanner model gated
// knows: how it connects, how it frames a read, how to answer it, and how
// to program it into the mode gated expects. The files are compiled into
// gated so a gate box needs nothing beside the binary; scanner.LoadModels
// parses and checks them.
package firmwareconfigs

import "embed"

// FS holds every *.yaml model file of this directory.
//
//go:embed *.yaml
var FS embed.FS
