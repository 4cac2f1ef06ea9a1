package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds each reply a Client waits for: a daemon that
// accepted the connection but does not answer is reported, not waited on.
const DefaultTimeout = 10 * time.Second

// maxReadBytes is the client's receive buffer: comfortably above what a
// server sends in one message (maxReplyBytes) so an older or newer server
// with larger chunks is still read whole.
const maxReadBytes = 1 << 20

// Client is one connection to a control socket.
type Client struct {
	Path    string
	Timeout time.Duration
	conn    *net.UnixConn
	buf     []byte
}

// Error is a failure talking to the daemon. Hint says what the user can
// do about it; Error() includes it.
type Error struct {
	Path string
	Op   string
	Err  error
	Hint string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// DaemonError is the daemon's own refusal ("ok": false).
type DaemonError struct{ Path, Msg string }

func (e *DaemonError) Error() string { return "vknetd on " + e.Path + ": " + e.Msg }

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			err = errno // "connect: permission denied" repeats what Op says
		}
		return nil, &Error{Path: path, Op: "connecting to", Err: err, Hint: dialHint(err)}
	}
	c := &Client{Path: path, Timeout: DefaultTimeout, conn: conn}
	// The clients' socket is SEQPACKET too and accepts anyone in the group:
	// wait for the daemon's hello before sending anything, so that a wrong
	// path costs a message, never a junk frame on the network.
	conn.SetReadDeadline(time.Now().Add(helloTimeout))
	r, err := c.read()
	var de *DaemonError
	switch {
	case errors.As(err, &de):
		conn.Close()
		return nil, err
	case err != nil || r.Hello != Hello:
		conn.Close()
		e := &Error{Path: path, Op: "connecting to", Err: errors.New("no hello from vknetd"),
			Hint: "that is not vknetd's control socket; the control socket is the -p path plus .ctl unless the daemon was started with --control"}
		var ce *Error
		if errors.As(err, &ce) && errors.Is(ce.Err, errVersion) {
			return nil, err
		}
		return nil, e
	}
	return c, nil
}

// helloTimeout is how long Dial waits for the daemon's hello; a daemon
// sends it at once, so a longer silence means another kind of socket.
var helloTimeout = 3 * time.Second

var errVersion = errors.New("control protocol version mismatch")

func dialHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ECONNREFUSED):
		return "is vknetd running? Its control socket is the -p path plus .ctl unless it was started with --control; give that path with --socket"
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return "only root and members of vknetd's group (--group, default vknet) may use it: 'usermod -aG vknet YOUR_USER', then log in again"
	case errors.Is(err, unix.EPROTOTYPE):
		return "that is not a control socket (the clients' socket is -p; the control socket is the -p path plus .ctl)"
	}
	return ""
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Ports lists every port of the switch.
func (c *Client) Ports() ([]Port, error) {
	var out []Port
	err := c.do(Request{Cmd: CmdPorts}, func(r *Reply) { out = append(out, r.Ports...) })
	return out, err
}

// MACs lists the MAC table.
func (c *Client) MACs() ([]MAC, error) {
	var out []MAC
	err := c.do(Request{Cmd: CmdMACs}, func(r *Reply) { out = append(out, r.MACs...) })
	return out, err
}

// Bindings lists secure mode's IP-to-MAC bindings.
func (c *Client) Bindings() ([]Binding, error) {
	var out []Binding
	err := c.do(Request{Cmd: CmdBindings}, func(r *Reply) { out = append(out, r.Bindings...) })
	return out, err
}

// UpgradeTimeout bounds an upgrade's reply: the daemon gives the new
// process 5 s to be ready.
const UpgradeTimeout = 30 * time.Second

// Upgrade has the daemon hand itself over to a new process started from
// binary ("" for its own executable) and returns the new daemon's pid.
func (c *Client) Upgrade(binary string) (int, error) {
	pid := 0
	old := c.Timeout
	c.Timeout = max(c.Timeout, UpgradeTimeout)
	defer func() { c.Timeout = old }()
	err := c.do(Request{Cmd: CmdUpgrade, Binary: binary}, func(r *Reply) { pid = r.Pid })
	return pid, err
}

// Stats returns the switch's totals.
func (c *Client) Stats() (Stats, error) {
	var out Stats
	got := false
	err := c.do(Request{Cmd: CmdStats}, func(r *Reply) {
		if r.Stats != nil {
			out, got = *r.Stats, true
		}
	})
	if err == nil && !got {
		err = &Error{Path: c.Path, Op: "reading from", Err: errors.New("stats reply without stats")}
	}
	return out, err
}

// Monitor turns the connection into a monitor port: flooded frames only,
// or with all a copy of every frame the switch forwards. After it returns,
// every Read on the connection is one Ethernet frame; a read of EOF right
// away means the daemon accepted the request but could not attach the
// monitor (its log says why).
func (c *Client) Monitor(all bool) (*net.UnixConn, error) {
	if err := c.do(Request{Cmd: CmdMonitor, All: all}, func(*Reply) {}); err != nil {
		return nil, err
	}
	c.conn.SetReadDeadline(time.Time{})
	return c.conn, nil
}

// do sends req and reads replies until one without "more".
func (c *Client) do(req Request, each func(*Reply)) error {
	req.V = Version
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if c.Timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(c.Timeout))
	}
	if _, err := c.conn.Write(b); err != nil {
		return &Error{Path: c.Path, Op: "sending to", Err: err}
	}
	for {
		r, err := c.read()
		if err != nil {
			return err
		}
		each(r)
		if !r.More {
			return nil
		}
	}
}

// read reads one reply message; a refusal is a *DaemonError.
func (c *Client) read() (*Reply, error) {
	if c.buf == nil {
		c.buf = make([]byte, maxReadBytes)
	}
	n, _, flags, _, err := c.conn.ReadMsgUnix(c.buf, nil)
	if err != nil {
		return nil, &Error{Path: c.Path, Op: "reading from", Err: err, Hint: readHint(err)}
	}
	if n == 0 {
		return nil, &Error{Path: c.Path, Op: "reading from", Err: errors.New("vknetd closed the connection without answering"),
			Hint: "is the daemon stopping? Its log says more"}
	}
	if flags&unix.MSG_TRUNC != 0 {
		return nil, &Error{Path: c.Path, Op: "reading from", Err: fmt.Errorf("reply longer than %d bytes", len(c.buf))}
	}
	var r Reply
	if err := json.Unmarshal(c.buf[:n], &r); err != nil {
		return nil, &Error{Path: c.Path, Op: "reading from", Err: fmt.Errorf("reply is not JSON: %w", err),
			Hint: "is that vknetd's control socket?"}
	}
	if r.V != Version {
		return nil, &Error{Path: c.Path, Op: "reading from", Err: fmt.Errorf("%w: vknetd speaks %d, this vknetctl %d", errVersion, r.V, Version),
			Hint: "use the vknetctl built with the running vknetd"}
	}
	if !r.OK {
		return nil, &DaemonError{Path: c.Path, Msg: r.Error}
	}
	return &r, nil
}

func readHint(err error) string {
	if errors.Is(err, unix.ECONNRESET) {
		return "vknetd closed the connection (is it stopping?)"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "vknetd accepted the connection but did not answer: is it stuck? SIGUSR1 logs its counters"
	}
	return ""
}
