package vhostguest

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/vhostuser"
)

// TestRefusalNote: a back-end's refusal note reaches Start as a
// RefusedError with its text, whether it came in place of a reply or
// was left on a connection closed before the guest sent anything; a close
// without a note stays an ordinary error.
func TestRefusalNote(t *testing.T) {
	if RefusalRequest != vhostuser.RefusalRequest {
		t.Fatalf("RefusalRequest %#x, the switch's is %#x", RefusalRequest, vhostuser.RefusalRequest)
	}
	for _, c := range []struct {
		name       string
		readFirst  bool // the back-end reads the first request before refusing
		note       string
		wantReason bool
	}{
		{"closed before the first request", false, "too many clients: raise --max-clients", true},
		{"in place of a reply", true, "memory table refused: raise --vhost-memory-max", true},
		{"closed without a note", true, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			g, err := New(Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			g.Attach(fds[1])
			backend := func() {
				if c.readFirst {
					var b [64]byte
					unix.Read(fds[0], b[:])
				}
				if c.note != "" {
					vhostuser.Refuse(fds[0], c.note)
				}
				unix.Close(fds[0])
			}
			if c.readFirst {
				go backend()
			} else {
				backend()
			}
			err = g.Start()
			var r *RefusedError
			switch {
			case c.wantReason && (!errors.As(err, &r) || r.Reason != c.note):
				t.Fatalf("Start = %v, want the refusal %q", err, c.note)
			case !c.wantReason && (err == nil || errors.As(err, &r)):
				t.Fatalf("Start = %v, want an error that is no refusal", err)
			}
		})
	}
}
