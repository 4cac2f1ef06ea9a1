package cli

import (
	"bytes"
	"testing"

	"github.com/spf13/pflag"
)

func TestPrintFlags(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringP("socket", "s", "/run/x", "the socket")
	fs.String("write", "", "a file")
	fs.IntP("count", "c", 0, "how many")
	fs.Int("mtu", 1500, "the MTU")
	fs.BoolP("debug", "d", false, "debug")
	var out bytes.Buffer
	PrintFlags(&out, fs, 19)
	want := "" +
		"  -s, --socket string the socket (default /run/x)\n" +
		"      --write string  a file\n" +
		"  -c, --count int     how many\n" +
		"      --mtu int       the MTU (default 1500)\n" +
		"  -d, --debug         debug\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
