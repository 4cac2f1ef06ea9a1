package engine

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
)

// The loop's fairness rule (step): in one round every ready port is read
// once, one batch at most, so a port offering a hundred times the frames
// of the others delays their frames by one round at most. Counted, not
// timed: each round the flooder's socket is topped up to far more than a
// batch, the quiet client sends one frame, the loop runs one round
// (step), and then the flooder must have been read for one batch at most
// and the quiet client's frame must have reached the receiver.
func TestOneBatchPerPortPerRound(t *testing.T) {
	const batch = 2
	for _, kind := range []string{"seqpacket", "stream"} {
		t.Run(kind, func(t *testing.T) {
			s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = batch })
			var flooder *testClient
			flood := ethFrame(broadcast, mac(1), 0x0800, 60)
			one := flood
			if kind == "stream" {
				flooder = s.connectStream()
				one = prefixed(flood)
			} else {
				flooder = s.connect()
			}
			quiet, receiver := s.connect(), s.connect()
			for _, c := range []*testClient{flooder, quiet, receiver} {
				if err := unix.SetNonblock(c.fd, true); err != nil {
					t.Fatal(err)
				}
			}
			for round := 0; round < 50; round++ {
				// Top the flooder up: it offers what its socket holds.
				offered := 0
				for {
					if _, err := unix.Write(flooder.fd, one); err != nil {
						break
					}
					offered++
				}
				waiting := offered
				if round == 0 && waiting < 100*batch {
					t.Fatalf("the flooder's socket took %d frames, want at least %d for this test", waiting, 100*batch)
				}
				f := ethFrame(broadcast, mac(2), 0x0800, 60)
				f[20] = byte(round)
				quiet.send(t, f)

				before := flooder.port.cnt.rxFrames
				if _, err := s.l.step(0); err != nil {
					t.Fatal(err)
				}
				if got := flooder.port.cnt.rxFrames - before; got > batch {
					t.Fatalf("round %d: the flooder was read for %d frames, more than one batch (%d)", round, got, batch)
				}
				var fromQuiet int
				for _, g := range receiver.recv(t) {
					if g[11] == 2 {
						if g[20] != byte(round) {
							t.Fatalf("round %d: the receiver got the quiet client's frame of round %d", round, g[20])
						}
						fromQuiet++
					}
				}
				if fromQuiet != 1 {
					t.Fatalf("round %d: the receiver got %d frames of the quiet client after one round, want 1", round, fromQuiet)
				}
				quiet.recv(t) // the flood reaches it too
			}
		})
	}
}
