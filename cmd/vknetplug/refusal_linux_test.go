package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// refusingSwitch runs a switch in the test with a vhost-user and a
// --stream listener, one client slot and a guest memory cap smaller than
// the plug's guest (its rings and buffers take about 5 MiB).
func refusingSwitch(t *testing.T) (e *engine.Engine, vhostPath, streamPath string) {
	dir := testbed.ShortTempDir(t)
	vhostPath, streamPath = filepath.Join(dir, "vhost"), filepath.Join(dir, "stream")
	var listeners []engine.Listener
	for _, l := range []struct {
		path string
		kind engine.ListenerKind
	}{{vhostPath, engine.VhostUser}, {streamPath, engine.Stream}} {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: l.path}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 8); err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, engine.Listener{Fd: fd, Kind: l.kind, Path: l.path})
	}
	policy, err := secure.New(secure.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e, err = engine.New(engine.Config{TapFd: -1, MTU: 1500, Policy: policy, Listeners: listeners,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		MACTable:   mactable.Config{Capacity: 64, PortLimit: 8, MaxAge: time.Minute},
		MaxClients: 1, GuestMemoryMax: 1 << 20, UserGuestMemory: 1 << 20, GuestMemoryTotal: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	t.Cleanup(func() {
		e.Stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return e, vhostPath, streamPath
}

// TestVhostPlugSaysWhyItWasRefused is finding 9 of issue 15: the plug
// prints the daemon's reason for refusing it (a memory table over
// --vhost-memory-max, too many clients), and, pointed at a --stream
// socket, which closes without a word, says it does not know why and
// what to check, instead of guessing "too many clients?".
func TestVhostPlugSaysWhyItWasRefused(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	e, vhostPath, streamPath := refusingSwitch(t)
	clients := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if s, _ := e.Stats(); s.Clients == n {
				return
			}
		}
		t.Fatalf("the switch never had %d clients", n)
	}
	expect := func(what string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: the plug connected", what)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: the plug said %q, want it to contain %q", what, err, w)
			}
		}
		t.Logf("%s: vknetplug: %v", what, err)
	}

	_, err := dialVhost(vhostPath, false)
	expect("memory cap", err, "vknetd refused this guest: ", "--vhost-memory-max 1 MiB", "raise --vhost-memory-max")
	clients(0)

	// The one client slot taken by a stream client.
	held, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(held, &unix.SockaddrUnix{Name: streamPath}); err != nil {
		t.Fatal(err)
	}
	clients(1)
	_, err = dialVhost(vhostPath, false)
	expect("too many clients", err, "vknetd refused this guest: too many clients", "raise --max-clients")
	unix.Close(held)
	clients(0)

	_, err = dialVhost(streamPath, false)
	expect("a --stream socket", err, "without a reason", "check that "+streamPath+" is vknetd's --vhost-user socket", "--stream", "the daemon's log")
	if strings.Contains(err.Error(), "too many clients") {
		t.Fatalf("pointed at a --stream socket, the plug still guesses: %v", err)
	}
}
