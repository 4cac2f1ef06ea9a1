package control

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// dialEnv makes the test binary, re-run under other credentials, dial the
// control socket it names and print what the daemon said.
const dialEnv = "VKNETD_CONTROL_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(dialEnv); path != "" {
		c, err := Dial(path)
		if err == nil {
			_, err = c.Ports()
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPeerCredentialsChecked reaches the server past the socket file's
// mode (chmod 0666 here, as a mistaken admin might) to show the server's
// own check: uid 65534 without the group is refused with the fix, and the
// same uid with the group as a supplementary one is let in.
func TestPeerCredentialsChecked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the client as uid 65534 with setpriv")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv: apt-get install util-linux")
	}
	dir := openDir(t)
	// The test binary, where uid 65534 can run it.
	exe := filepath.Join(dir, "control.test")
	copyFile(t, os.Args[0], exe)

	const gid = 4242 // a group uid 65534 is not in
	path := filepath.Join(dir, "vknet.ctl")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	s := NewServer(ln, ServerConfig{Engine: &fakeEngine{}, GID: gid, Group: "vknet"})
	defer s.Close()

	run := func(groups ...string) (string, error) {
		args := append([]string{"--reuid=65534", "--regid=65534"}, groups...)
		cmd := exec.Command("setpriv", append(args, exe)...)
		cmd.Env = append(os.Environ(), dialEnv+"="+path)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := run("--clear-groups")
	if err == nil || !strings.Contains(out, "permission denied: uid 65534 is neither root nor in group vknet") ||
		!strings.Contains(out, "usermod -aG vknet") || !strings.Contains(out, path) {
		t.Fatalf("non-member: %v, said %q; want a refusal naming the uid, group, fix and socket", err, out)
	}
	out, err = run(fmt.Sprintf("--groups=%d", gid))
	if err != nil || out != "ok" {
		t.Fatalf("member through a supplementary group: %v, said %q; want ok", err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// openDir is a temporary directory that other users can reach (t.TempDir's
// parent is mode 0700).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vknetd-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A local user connecting in a loop, refused each time, cannot write a
// log line per attempt (issue 7, finding 5).
func TestRefusedConnectsAreBraked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: connects as uid 65534")
	}
	dir := openDir(t)
	path := filepath.Join(dir, "vknet.ctl")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	s := NewServer(ln, ServerConfig{Engine: &fakeEngine{}, GID: 4242, Group: "vknet",
		Log: slog.New(slog.NewTextHandler(&logBuf, nil))})
	defer s.Close()
	const attempts = 300
	nobody := testbed.User{UID: 65534, GID: 65534}
	refused := 0
	if err := testbed.AsUser(t, nobody, func() error {
		for i := 0; i < attempts; i++ {
			c, err := Dial(path)
			if err == nil {
				_, err = c.Ports()
				c.Close()
			}
			if err != nil && strings.Contains(err.Error(), "permission denied") {
				refused++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if refused != attempts {
		t.Fatalf("%d of %d attempts refused", refused, attempts)
	}
	lines := strings.Count(logBuf.String(), `msg="control socket: refused"`)
	if lines == 0 || lines > 40 {
		t.Fatalf("%d refused connects wrote %d log lines; want the burst (32) and a trickle", attempts, lines)
	}
}

// syncBuffer is a bytes.Buffer the server's goroutines may write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
