package engine

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// Two users with no right but to connect (the socket is opened to them).
var (
	hoarder = testbed.User{UID: 4242, GID: 4242}
	tenant  = testbed.User{UID: 4343, GID: 4343}
	third   = testbed.User{UID: 4444, GID: 4444}
)

// vhostSwitchForUsers is vhostSwitch with its socket open to every user.
func vhostSwitchForUsers(t *testing.T, tweak func(*Config)) (*Engine, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: guests connect as other users (testbed.AsUser)")
	}
	e, path := vhostSwitch(t, false, tweak)
	for _, p := range []string{filepath.Dir(filepath.Dir(path)), filepath.Dir(path)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	return e, path
}

// dialAs connects to the switch as u and returns a guest on that
// connection, not yet started.
func dialAs(t *testing.T, path string, u testbed.User) *vhostguest.Guest {
	t.Helper()
	var fd int
	var dialErr error
	if err := testbed.AsUser(t, u, func() error {
		fd, dialErr = vhostguest.Dial(path)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if dialErr != nil {
		t.Fatalf("uid %d: %v", u.UID, dialErr)
	}
	g, err := vhostguest.New(vhostguest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	g.Attach(fd)
	return g
}

// setBigTable plays a guest that offers a memory table of regions of the
// sizes given, each a sparse memfd (ftruncated, never touched: it costs
// the guest nothing),
// and waits for the switch's answer: nil when mapped, the switch's
// refusal otherwise.
func setBigTable(t *testing.T, g *vhostguest.Guest, sizes ...uint64) error {
	t.Helper()
	const v1 = vhostguest.FlagVersion1
	if err := g.Message(vhostguest.ReqGetFeatures, v1, nil); err != nil {
		return err
	}
	if _, err := g.Reply(vhostguest.ReqGetFeatures); err != nil {
		return err
	}
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	if err := g.Message(vhostguest.ReqSetFeatures, v1, u64(vhostguest.FeatVersion1|vhostguest.FeatProtocolFeature)); err != nil {
		return err
	}
	if err := g.Message(vhostguest.ReqSetProtocolFeatures, v1, u64(vhostguest.ProtoFeatReplyAck)); err != nil {
		return err
	}
	table := binary.LittleEndian.AppendUint32(nil, uint32(len(sizes)))
	table = binary.LittleEndian.AppendUint32(table, 0)
	var fds []int
	gpa, ua := uint64(0x100000), uint64(0x7f0000000000)
	for _, size := range sizes {
		mem, err := unix.MemfdCreate("hoard", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(mem) // the switch's mapping keeps it
		if err := unix.Ftruncate(mem, int64(size)); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, mem)
		ua -= size
		for _, v := range []uint64{gpa, size, ua, 0} {
			table = binary.LittleEndian.AppendUint64(table, v)
		}
		gpa += size
	}
	if err := g.Message(vhostguest.ReqSetMemTable, v1|vhostguest.FlagNeedReply, table, fds...); err != nil {
		return err
	}
	ack, err := g.Reply(vhostguest.ReqSetMemTable)
	if err == nil && (len(ack) != 8 || binary.LittleEndian.Uint64(ack) != 0) {
		t.Fatalf("SET_MEM_TABLE answered %x", ack)
	}
	return err
}

func refusedFor(t *testing.T, what string, err error, flag string) {
	t.Helper()
	var r *vhostguest.RefusedError
	if !errors.As(err, &r) || !strings.Contains(r.Reason, flag) {
		t.Fatalf("%s: err = %v, want the switch's refusal naming %s", what, err, flag)
	}
	t.Logf("%s: %s", what, r.Reason)
}

func vmSize(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmSize")
	return 0
}

// TestVhostUserMemoryCaps is finding 3 of issue 15 with the default caps:
// one user's guests map the largest tables allowed (1 TiB each, sparse
// memfds) until the user's cap (a quarter of 64 TiB) refuses the next,
// with a note naming --user-vhost-memory; a table over one guest's cap is
// refused naming --vhost-memory-max; and then another user's ordinary
// guests still connect and pass frames.
func TestVhostUserMemoryCaps(t *testing.T) {
	e, path := vhostSwitchForUsers(t, func(c *Config) { c.MaxClients = 32 })
	const tib = 1 << 40
	before := vmSize(t)
	held := 0
	var hoard []*vhostguest.Guest
	for ; held < 32; held++ {
		g := dialAs(t, path, hoarder)
		hoard = append(hoard, g)
		err := setBigTable(t, g, tib)
		if err != nil {
			refusedFor(t, "the hoarder's guest over its user's cap", err, "raise --user-vhost-memory")
			break
		}
	}
	if held != 16 {
		t.Fatalf("the hoarder's guests mapped %d tables of 1 TiB, want 16 (--user-vhost-memory 16T)", held)
	}
	if grown := vmSize(t) - before; grown < 16*tib {
		t.Fatalf("VmSize grew by %d bytes while 16 TiB were mapped", grown)
	}
	refusedFor(t, "a table over one guest's cap", setBigTable(t, dialAs(t, path, third), tib/2, tib/2+4096), "raise --vhost-memory-max")
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 16 })

	// The tenant's guests connect as vknetplug's does, and talk.
	a, b := dialAs(t, path, tenant), dialAs(t, path, tenant)
	for _, g := range []*vhostguest.Guest{a, b} {
		if err := g.Start(); err != nil {
			t.Fatalf("the tenant's guest, beside 16 TiB of the hoarder's tables: %v", err)
		}
		g.PostRX(1 << 16)
	}
	hello := ethFrame(broadcast, mac(2), 0x88b5, 60)
	if b.Send([][]byte{hello}, nil) != 1 {
		t.Fatal("b could not send")
	}
	if got := receiveFrames(t, a, 1); len(got) != 1 || string(got[0]) != string(hello) {
		t.Fatalf("a received %d frames, want b's broadcast", len(got))
	}
	reply := ethFrame(mac(2), mac(1), 0x88b5, 1000)
	if a.Send([][]byte{reply}, nil) != 1 {
		t.Fatal("a could not send")
	}
	if got := receiveFrames(t, b, 1); len(got) != 1 || string(got[0]) != string(reply) {
		t.Fatalf("b received %d frames, want a's reply", len(got))
	}

	// The hoarder's guests go: their share goes with them, to the byte.
	for _, g := range hoard {
		g.Close()
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	var used uint64
	var hoarderLeft bool
	if err := e.do(func() { used, hoarderLeft = e.guestMem.used, e.users.byUID[int32(hoarder.UID)] != nil }); err != nil {
		t.Fatal(err)
	}
	if want := uint64(len(a.Mem()) + len(b.Mem())); used != want || hoarderLeft {
		t.Fatalf("after the hoarder left: %d bytes counted (the tenant's guests map %d), hoarder still a user: %v", used, want, hoarderLeft)
	}
	if err := setBigTable(t, dialAs(t, path, hoarder), tib); err != nil {
		t.Fatalf("the hoarder's share was not released: %v", err)
	}
}

// TestVhostUserRefusalsSayWhy: a guest refused at the door (too many
// clients, too many of its user's) reads why from the switch's note
// instead of guessing from the close.
func TestVhostUserRefusalsSayWhy(t *testing.T) {
	e, path := vhostSwitchForUsers(t, func(c *Config) { c.MaxClients, c.UserClients = 3, 2 })
	for i := 0; i < 2; i++ {
		if err := dialAs(t, path, hoarder).Start(); err != nil {
			t.Fatal(err)
		}
	}
	refusedFor(t, "the user's third guest", dialAs(t, path, hoarder).Start(), "raise --user-clients")
	if err := dialAs(t, path, tenant).Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 3 })
	refusedFor(t, "a guest beyond --max-clients", dialAs(t, path, third).Start(), "raise --max-clients")
}
