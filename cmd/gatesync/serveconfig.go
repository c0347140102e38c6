package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gated-dev/gated/internal/cli"
)

// parseWithConfig is parse for serve: after the flags, the YAML file named
// by --config (if any) sets every flag not given on the command line, so
// flags override the file. A key is a flag's name with _ for -
// (mqtt_listen: for --mqtt-listen); an unknown key is a usage error that
// names it.
func parseWithConfig(fs *flag.FlagSet, dir, config *string, args []string) error {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	if *config != "" {
		if err := applyConfigFile(fs, *config); err != nil {
			return err
		}
	}
	if *dir == "" {
		return cli.Usagef("--dir DIR is required (a flag or dir: in --config)")
	}
	return nil
}

func applyConfigFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return cli.Usagef("--config: %v", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return cli.Usagef("--config %s: %v", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var keys []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" {
			keys = append(keys, strings.ReplaceAll(f.Name, "-", "_"))
		}
	})
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		name := strings.ReplaceAll(k, "_", "-")
		if name == "config" || strings.Contains(k, "-") || fs.Lookup(name) == nil {
			return cli.Usagef("--config %s: unknown key %q (known: %s)", path, k, strings.Join(keys, ", "))
		}
		if given[name] {
			continue // the flag wins
		}
		v := ""
		if m[k] != nil {
			v = fmt.Sprint(m[k])
		}
		if err := fs.Set(name, v); err != nil {
			return cli.Usagef("--config %s: %s: %v", path, k, err)
		}
	}
	return nil
}
