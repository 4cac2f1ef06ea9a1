package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vknetd/vknetd/framefmt"
)

// Snaplen is the pcap snapshot length: every frame the switch carries
// (MTU at most 65535, plus headers) is kept whole but for the last bytes
// of the very largest.
const Snaplen = 65535

// flushEvery bounds how stale the output may be while frames keep
// arriving; an idle connection is flushed at once.
const flushEvery = 200 * time.Millisecond

// Capture is where a watched frame goes: one framefmt line, a pcap record,
// or both. Output is buffered and flushed when the stream pauses, at most
// flushEvery apart, and at Close, so a pcap that tcpdump reads while the
// capture runs is never more than that behind.
type Capture struct {
	lines *bufio.Writer
	dec   *framefmt.Decoder
	line  []byte

	pcapFile *os.File // nil when writing to stdout or not at all
	pcapBuf  *bufio.Writer
	pcap     *pcapgo.Writer
}

// NewCapture prints lines to out (nil: none) and writes pcap to pcapPath
// (empty: none). A pcapPath of "-" writes pcap to out instead of the
// lines, so the output can be piped to tcpdump -r -. flag is the
// command's option for pcapPath, named in errors. A new file gets mode
// 0600: it holds other people's traffic.
func NewCapture(out io.Writer, pcapPath, flag string) (*Capture, error) {
	c := &Capture{}
	lines := out
	var pw io.Writer
	switch pcapPath {
	case "":
	case "-":
		pw, lines = out, nil
	default:
		f, err := os.OpenFile(pcapPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("cannot write pcap file %s (%s): %w", pcapPath, flag, err)
		}
		c.pcapFile, pw = f, f
	}
	if pw != nil {
		c.pcapBuf = bufio.NewWriterSize(pw, 64<<10)
		c.pcap = pcapgo.NewWriterNanos(c.pcapBuf)
		if err := c.pcap.WriteFileHeader(Snaplen, layers.LinkTypeEthernet); err != nil {
			c.Close()
			return nil, fmt.Errorf("writing pcap header to %s (%s): %w", pcapPath, flag, err)
		}
		// The header goes out at once: a reader opening the file before
		// the first frame sees an empty capture, not a broken one.
		if err := c.Flush(); err != nil {
			c.Close()
			return nil, fmt.Errorf("writing pcap header to %s (%s): %w", pcapPath, flag, err)
		}
	}
	if lines != nil {
		c.lines = bufio.NewWriter(lines)
		c.dec = framefmt.NewDecoder()
		c.line = make([]byte, 0, 512)
	}
	return c, nil
}

// Frame records one frame received at ts.
func (c *Capture) Frame(ts time.Time, frame []byte) error {
	if c.lines != nil {
		c.line = c.dec.Line(c.line[:0], ts, frame)
		c.line = append(c.line, '\n')
		if _, err := c.lines.Write(c.line); err != nil {
			return err
		}
	}
	if c.pcap != nil {
		data := frame
		if len(data) > Snaplen {
			data = data[:Snaplen]
		}
		ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(frame)}
		if err := c.pcap.WritePacket(ci, data); err != nil {
			return err
		}
	}
	return nil
}

// Flush writes out everything buffered.
func (c *Capture) Flush() error {
	var errs []error
	if c.lines != nil {
		errs = append(errs, c.lines.Flush())
	}
	if c.pcapBuf != nil {
		errs = append(errs, c.pcapBuf.Flush())
	}
	return errors.Join(errs...)
}

// Close flushes and closes the pcap file.
func (c *Capture) Close() error {
	err := c.Flush()
	if c.pcapFile != nil {
		err = errors.Join(err, c.pcapFile.Close())
		c.pcapFile = nil
	}
	return err
}

// Watch reads frames from conn, one per message, into c until count
// frames (0: no limit), EOF or an error. It returns how many frames it
// recorded; EOF is returned as io.EOF so the caller can tell the daemon
// closing from a count reached (nil).
func Watch(conn net.Conn, c *Capture, count int) (int, error) {
	// The largest frame is --mtu 65535 plus 18 bytes of headers; one byte
	// more would show a longer message rather than cut it.
	buf := make([]byte, 65535+18+1)
	n := 0
	lastFlush := time.Now()
	for count == 0 || n < count {
		// A read that waits longer than flushEvery means the stream has
		// paused: show what is buffered.
		conn.SetReadDeadline(time.Now().Add(flushEvery))
		m, err := conn.Read(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if ferr := c.Flush(); ferr != nil {
					return n, ferr
				}
				lastFlush = now
				continue
			}
			if errors.Is(err, io.EOF) {
				return n, io.EOF
			}
			return n, err
		}
		if m == 0 {
			// A zero-length read on SOCK_SEQPACKET is the peer closing.
			return n, io.EOF
		}
		if err := c.Frame(now, buf[:m]); err != nil {
			return n, err
		}
		n++
		if now.Sub(lastFlush) >= flushEvery {
			if err := c.Flush(); err != nil {
				return n, err
			}
			lastFlush = now
		}
	}
	return n, c.Flush()
}

// SignalStop ends a Watch cleanly on SIGINT or SIGTERM by closing its
// connection. Until Release the signals are caught, not fatal, so the
// caller can still close its Capture and a pcap file ends with the last
// frame received.
type SignalStop struct {
	sigs    chan os.Signal
	stopped atomic.Bool
}

// CloseOnSignal closes conn on the first SIGINT or SIGTERM.
func CloseOnSignal(conn io.Closer) *SignalStop {
	s := &SignalStop{sigs: make(chan os.Signal, 1)}
	signal.Notify(s.sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-s.sigs; ok {
			s.stopped.Store(true)
			conn.Close()
		}
	}()
	return s
}

// Stopped reports whether a signal closed the connection, so the caller
// can tell a requested stop from the daemon going away.
func (s *SignalStop) Stopped() bool { return s.stopped.Load() }

// Release gives SIGINT and SIGTERM back their default action.
func (s *SignalStop) Release() {
	signal.Stop(s.sigs)
	// signal.Stop returns only once no more signals will be sent, so
	// closing is safe and ends the goroutine.
	close(s.sigs)
}
