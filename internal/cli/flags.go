// Package cli holds what vknetd and vknetctl share on the command line, so
// both --help listings read alike.
package cli

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// PrintFlags lists fs's flags for --help, one a line: short and long name,
// the value's type, the usage and the default. Name and type are padded
// to width so the usages line up. Zero, empty and boolean defaults are
// left out: they say nothing a reader would not assume.
func PrintFlags(w io.Writer, fs *pflag.FlagSet, width int) {
	fs.VisitAll(func(f *pflag.Flag) {
		name := "    --" + f.Name
		if f.Shorthand != "" {
			name = "-" + f.Shorthand + ", --" + f.Name
		}
		if f.Value.Type() != "bool" {
			name += " " + f.Value.Type()
		}
		def := ""
		if f.Value.Type() != "bool" && f.DefValue != "" && f.DefValue != "0" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  %-*s %s%s\n", width, name, f.Usage, def)
	})
}
