package secure

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/filter.golden from the generated program")

// TestFilterGolden pins the generated program's text, so a change to the
// filter shows in review as a change to its disassembly. Rewrite it with
// go test ./secure -run TestFilterGolden -update.
func TestFilterGolden(t *testing.T) {
	var b bytes.Buffer
	for _, v6 := range []bool{false, true} {
		p := newTestPolicy(t, testConfig(v6))
		cfg := testConfig(v6)
		v6prefix := "none"
		if v6 {
			v6prefix = cfg.IPv6.String()
		}
		fmt.Fprintf(&b, "; policy %s, TAP %x, IPv6 %s\n", cfg.Network, cfg.TapMAC, v6prefix)
		fmt.Fprintf(&b, "%v\n", p.FilterInstructions())
	}
	golden := filepath.Join("testdata", "filter.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("the generated filter differs from %s; if the change is meant, rerun with -update and review the diff.\n%s", golden, b.String())
	}
}

// corpusFrames returns the []byte inputs of every fuzz corpus file under
// testdata/fuzz (all targets), for the differential test.
func corpusFrames(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	frames := make(map[string][]byte)
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(f)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			line := s.Text()
			if !strings.HasPrefix(line, "[]byte(") || !strings.HasSuffix(line, ")") {
				continue
			}
			v, err := strconv.Unquote(line[len("[]byte(") : len(line)-1])
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			frames[name] = []byte(v)
			break
		}
		f.Close()
	}
	return frames
}
