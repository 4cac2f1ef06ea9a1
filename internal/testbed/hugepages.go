package testbed

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// nrHugepages is the kernel's pool of default-sized (2 MiB on x86-64) huge
// pages.
const nrHugepages = "/proc/sys/vm/nr_hugepages"

// Hugepages adds n default-sized huge pages to the kernel's pool for a DPDK
// process (dpdk-testpmd --in-memory takes its memory from the pool, with
// no hugetlbfs mount and no files left behind), and at cleanup puts the
// pool back as it found it. It skips t when the kernel cannot find n free
// pages (memory too fragmented): that says nothing about vknetd.
//
// Register it before the processes that use the pages, so that they are
// stopped (cleanups run last first) before the pool shrinks. The pool is
// the machine's: run one test that calls this at a time.
func Hugepages(t testing.TB, n int) {
	t.Helper()
	RequireRoot(t)
	old, err := readInt(nrHugepages)
	if err != nil {
		t.Fatalf("reading %s: %v", nrHugepages, err)
	}
	set := old + n
	if err := os.WriteFile(nrHugepages, []byte(strconv.Itoa(set)), 0); err != nil {
		t.Skipf("cannot add %d huge pages (%s): %v", n, nrHugepages, err)
	}
	t.Cleanup(func() {
		now, err := readInt(nrHugepages)
		switch {
		case err != nil:
			t.Errorf("reading %s: %v", nrHugepages, err)
		case now != set:
			t.Logf("%s changed by someone else meanwhile: left at %d (was %d before this test)", nrHugepages, now, old)
		default:
			if err := os.WriteFile(nrHugepages, []byte(strconv.Itoa(old)), 0); err != nil {
				t.Errorf("giving back %d huge pages (%s back to %d): %v", n, nrHugepages, old, err)
			}
		}
	})
	free, err := meminfo("HugePages_Free")
	if err != nil {
		t.Fatal(err)
	}
	if free < n {
		t.Skipf("only %d free huge pages after asking the kernel for %d more (memory too fragmented?)", free, n)
	}
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// meminfo is the number on /proc/meminfo's line for key.
func meminfo(key string) (int, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), ":")
		if ok && name == key {
			fields := strings.Fields(value)
			if len(fields) > 0 {
				return strconv.Atoi(fields[0])
			}
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s line", key)
}
