package workload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// An entry's path and sha256 selectors pick the callers that run that
// executable: the test process itself, its own executable's path and
// digest; another path or digest picks nothing, and every selector of
// an entry must match.
func TestWorkloadAPISelectsByExecutable(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	mine := hex.EncodeToString(sum[:])
	other := sha256.Sum256(append(b, 0))
	uid := strconv.Itoa(os.Getuid())
	const planner = "=spiffe://example.org/agent/planner"
	// A symbolic link to the executable names it, but is not its path.
	link := filepath.Join(t.TempDir(), "planner")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	selected := [][]string{
		{"uid:" + uid + ",path:" + exe + planner},
		{"uid:" + uid + ",sha256:" + mine + planner},
		{"unix:uid:" + uid + ",unix:path:" + exe + ",unix:sha256:" + strings.ToUpper(mine) + planner},
	}
	refused := [][]string{
		{"uid:" + uid + ",path:" + filepath.Join(filepath.Dir(exe), "other") + planner},
		{"uid:" + uid + ",path:" + filepath.Dir(exe) + planner},
		{"uid:" + uid + ",path:" + link + planner},
		{"uid:" + uid + ",sha256:" + hex.EncodeToString(other[:]) + planner},
		{"uid:" + strconv.Itoa(os.Getuid()+1) + ",path:" + exe + planner},
		{"uid:" + uid + ",path:" + exe + ",sha256:" + hex.EncodeToString(other[:]) + planner},
		{"uid:" + uid + ",path:" + exe + ",supplementary_gid:4000000000" + planner},
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		selected = append(selected, []string{"uid:" + uid + ",path:" + exe + ",supplementary_gid:" + strconv.Itoa(g) + planner})
	}
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	ctx := ctxFor(t)
	for _, entries := range append(selected, refused...) {
		var es []Entry
		for _, e := range entries {
			es = append(es, entry(t, e))
		}
		addr := serve(t, is, es...)
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
		if slices.ContainsFunc(refused, func(r []string) bool { return slices.Equal(r, entries) }) {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("entries %q: FetchX509SVIDs = %v, %v; want PermissionDenied", entries, svids, err)
			}
			continue
		}
		if err != nil || len(svids) != 1 || svids[0].ID.String() != "spiffe://example.org/agent/planner" {
			t.Errorf("entries %q: FetchX509SVIDs = %v, %v; want the planner's", entries, svids, err)
		}
	}
}

// The cgroup selectors pick the callers in that cgroup, read from the
// kernel when they connect: the test process itself, its own cgroup (and
// the unit, container and pod its name says, when it says one); another
// cgroup, unit, container or pod picks nothing.
func TestWorkloadAPISelectsByCgroup(t *testing.T) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	own, err := unifiedCgroup(b)
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(os.Getuid())
	const planner = "=spiffe://example.org/agent/planner"
	other := strings.Repeat("0", 64)
	selected := []string{"cgroup:" + own + planner, "uid:" + uid + ",cgroup:" + own + planner}
	refused := []string{
		"cgroup:" + path.Join(own, "other") + planner,
		"systemd_unit:mandate-test-other.service" + planner,
		"uid:" + uid + ",container_id:" + other + planner,
		"uid:" + uid + ",pod_uid:00000000-0000-0000-0000-000000000000" + planner,
		"uid:" + strconv.Itoa(os.Getuid()+1) + ",cgroup:" + own + planner,
	}
	if own != "/" {
		refused = append(refused, "cgroup:"+path.Dir(own)+planner)
	}
	if u := systemdUnit(own); u != "" {
		selected = append(selected, "systemd_unit:"+u+planner)
	}
	if c := containerID(own); c != "" && c != other {
		selected = append(selected, "uid:"+uid+",container_id:"+c+planner)
	}
	if p := podUID(own); p != "" {
		selected = append(selected, "uid:"+uid+",pod_uid:"+p+planner)
	}
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	ctx := ctxFor(t)
	for _, e := range append(selected, refused...) {
		addr := serve(t, is, entry(t, e))
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
		if slices.Contains(refused, e) {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("entry %q (this process's cgroup is %s): FetchX509SVIDs = %v, %v; want PermissionDenied", e, own, svids, err)
			}
			continue
		}
		if err != nil || len(svids) != 1 || svids[0].ID.String() != "spiffe://example.org/agent/planner" {
			t.Errorf("entry %q (this process's cgroup is %s): FetchX509SVIDs = %v, %v; want the planner's", e, own, svids, err)
		}
	}
}

// A pidfd names its process while it runs: not once it has exited, nor
// another process that has its pid number.
func TestSamePIDFD(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(sleep, "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	pid := int32(child.Process.Pid)
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if err := samePIDFD(pidfd, pid); err != nil {
		t.Errorf("samePIDFD of a running process = %v", err)
	}
	// The pid number now another process's: this one's.
	if err := samePIDFD(pidfd, int32(os.Getpid())); err == nil {
		t.Error("samePIDFD of a pidfd of another process = nil")
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	if err := samePIDFD(pidfd, pid); err == nil {
		t.Error("samePIDFD of a process that has exited = nil")
	}
}

// Without a pidfd, a process is the one that connected while its start
// time is the same and the connection is open.
func TestSameStart(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	self := int32(os.Getpid())
	start, err := startTime(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameStart(raw, self, start); err != nil {
		t.Errorf("sameStart of this process = %v", err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := sameStart(raw, self, start); err != nil {
		t.Errorf("sameStart with data waiting = %v", err)
	}
	if err := sameStart(raw, self, start+1); err == nil {
		t.Error("sameStart of a process started at another time = nil")
	}
	p := readProcess(c, self, procNeeds{exe: true})
	if p.err != nil || p.exe == "" {
		t.Errorf("readProcess of this process = %+v", p)
	}
	client.Close()
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if err := sameStart(raw, self, start); err == nil {
		t.Error("sameStart over a connection its caller closed = nil")
	}
}

func TestGroupsOf(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   []uint32
		ok     bool
	}{
		{"Name:\tx\nGroups:\t4 24 4000000000 \nNSpid:\t1\n", []uint32{4, 24, 4000000000}, true},
		{"Groups:\t\n", nil, true},
		{"Name:\tx\n", nil, false},
		{"Groups:\t1 x\n", nil, false},
		{"Groups:\t4294967296\n", nil, false},
	} {
		got, err := groupsOf([]byte(tc.status))
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("groupsOf(%q) = %v, %v; want %v (ok %v)", tc.status, got, err, tc.want, tc.ok)
		}
	}
}

// An executable's digest is computed once per contents, and kept; one
// whose file changed since it was read, or larger than the bound, is
// refused.
func TestDigests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exe")
	if err := os.WriteFile(path, []byte("program"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	key := keyOf(fi)
	d := newDigests()
	want := sha256.Sum256([]byte("program"))
	if sum, err := d.of(context.Background(), f, key, 0); err != nil || sum != hex.EncodeToString(want[:]) {
		t.Errorf("digest = %s, %v; want %x", sum, err, want)
	}
	f.Close() // kept: not read again
	if sum, err := d.of(context.Background(), f, key, 0); err != nil || sum != hex.EncodeToString(want[:]) {
		t.Errorf("digest kept = %s, %v; want %x", sum, err, want)
	}
	if err := os.WriteFile(path, []byte("another"), 0o755); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// Written in place: the same inode, its contents changed since key.
	if sum, err := newDigests().of(context.Background(), g, key, 0); err == nil {
		t.Errorf("digest of a file changed since = %s, nil", sum)
	}
	stale := key
	stale.ino++
	if sum, err := d.of(context.Background(), g, stale, 0); err == nil {
		t.Errorf("digest of another file = %s, nil", sum)
	}
	// Callers asking at once all get it.
	h, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	hi, err := h.Stat()
	if err != nil {
		t.Fatal(err)
	}
	now := sha256.Sum256([]byte("another"))
	sums := make(chan string, 8)
	for range cap(sums) {
		go func() {
			sum, err := d.of(context.Background(), h, keyOf(hi), 0)
			if err != nil {
				sum = err.Error()
			}
			sums <- sum
		}()
	}
	for range cap(sums) {
		if sum := <-sums; sum != hex.EncodeToString(now[:]) {
			t.Errorf("digest asked at once = %s, want %x", sum, now)
		}
	}
	// Every slot of a user id held (by readings that hang): its caller
	// waits no longer than its call lasts, and another user id's
	// digest is still computed.
	const hung = 1000
	if held := holdShare(t, hashing, hung); held >= maxHashing {
		t.Errorf("the callers of one user id took all %d digests' slots", held)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err = newDigests().of(ended, h, keyOf(hi), hung); !errors.Is(err, context.Canceled) {
		t.Errorf("digest with every slot of its user id held = %v, want the call's end", err)
	}
	if sum, err := newDigests().of(ctxFor(t), h, keyOf(hi), hung+1); err != nil || sum != hex.EncodeToString(now[:]) {
		t.Errorf("digest of another user id's caller = %s, %v; want %x", sum, err, now)
	}
	big := key
	big.size = maxExecutableBytes + 1
	if _, err := d.of(context.Background(), g, big, 0); err == nil {
		t.Error("digest of a file over the bound = nil")
	}
}

// A caller whose process could not be read or checked matches no
// selector that asks it: it is refused as any caller no entry selects,
// told no more, and the log says why.
func TestWorkloadAPIFailsClosedOnAProcessNotChecked(t *testing.T) {
	var log bytes.Buffer
	s, err := New([]Entry{entry(t, "uid:"+strconv.Itoa(os.Getuid())+",path:/opt/agents/planner=spiffe://example.org/agent/planner")},
		&issuer{}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	why := "the process that connected (pid 7) has exited"
	who := Caller{PID: 7, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), proc: &process{err: errors.New(why)}}
	ctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), metadata.Pairs("workload.spiffe.io", "true")),
		&peer.Peer{AuthInfo: callerInfo{who}})
	_, err = s.entitled(ctx)
	if status.Code(err) != codes.PermissionDenied || strings.Contains(err.Error(), "exited") || strings.Contains(err.Error(), "planner") {
		t.Errorf("entitled = %v, want PermissionDenied saying no more than before", err)
	}
	if !strings.Contains(log.String(), why) {
		t.Errorf("the log %q does not say why", log.String())
	}
}

// The callers of one user id hold no more than their share of the
// slots that readings of processes take: when theirs hang (an
// executable on a file system they serve themselves, which never
// answers), another user's caller is still read.
func TestReadingsOfOneUserLeaveOthersSlots(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(filepath.Join(t.TempDir(), "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	who, err := callerOf(c)
	if err != nil {
		t.Fatal(err)
	}
	// Another user id's readings take every slot they can, and hang.
	if held := holdShare(t, reads, who.UID+1); held >= maxReads {
		t.Errorf("the callers of one user id took all %d slots", held)
	}
	p := readWithin(c, who, procNeeds{exe: true})
	defer p.close()
	if p.err != nil || p.exe != exe {
		t.Errorf("the caller of another user id = %q, %v; want it read, %q", p.exe, p.err, exe)
	}
}

// An executable on FUSE matches no sha256 selector: its server sees who
// reads, and may give the digest's reading other bytes than the process
// runs. Those of the file systems the kernel serves are read as run.
func TestDigestibleFS(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fsType int64
		ok     bool
	}{
		{"fuse", unix.FUSE_SUPER_MAGIC, false},
		{"ext4", unix.EXT4_SUPER_MAGIC, true},
		{"tmpfs", unix.TMPFS_MAGIC, true},
		{"overlayfs", unix.OVERLAYFS_SUPER_MAGIC, true},
		{"xfs", unix.XFS_SUPER_MAGIC, true},
	} {
		if err := digestibleFS(tc.fsType); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want accepted %v", tc.name, err, tc.ok)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := contentsReadable(f); err != nil {
		t.Errorf("this test's own executable: %v", err)
	}
}

// A caller's process is read only for the entries its ids do not rule
// out: with uid:N beside path, another user's callers are not read (a
// user whose readings hang cannot hold slots through entries that are
// not its own).
func TestNeedsOfTheEntriesACallerMayMatch(t *testing.T) {
	parse := func(s string) Entry {
		e, err := ParseEntry(s + "=spiffe://example.org/agent/a")
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	sum := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		entries []string
		who     Caller
		want    procNeeds
	}{
		{"its uid", []string{"uid:1000,path:/opt/a"}, Caller{UID: 1000, GID: 1}, procNeeds{exe: true}},
		{"another uid", []string{"uid:1000,path:/opt/a"}, Caller{UID: 2000, GID: 1}, procNeeds{}},
		{"another gid", []string{"gid:5,supplementary_gid:7"}, Caller{UID: 1, GID: 6}, procNeeds{}},
		{"its gid", []string{"gid:5,supplementary_gid:7"}, Caller{UID: 1, GID: 5}, procNeeds{groups: true}},
		{"a digest by name", []string{"user:alice,sha256:" + sum}, Caller{UID: 2000}, procNeeds{exe: true, file: true}},
		{"a name is not settled", []string{"user:alice,path:/opt/a"}, Caller{UID: 2000}, procNeeds{exe: true}},
		{"of the entries that may match", []string{"uid:1000,sha256:" + sum, "uid:2000,path:/opt/b"}, Caller{UID: 2000}, procNeeds{exe: true}},
		{"ids only", []string{"uid:2000"}, Caller{UID: 2000}, procNeeds{}},
		{"a cgroup", []string{"cgroup:/system.slice/a.service"}, Caller{UID: 2000}, procNeeds{cgroup: true}},
		{"a unit", []string{"systemd_unit:a.service"}, Caller{UID: 2000}, procNeeds{cgroup: true}},
		{"a container of its uid", []string{"uid:2000,container_id:" + sum, "uid:1000,pod_uid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}, Caller{UID: 2000}, procNeeds{cgroup: true}},
		{"a pod of another uid", []string{"uid:1000,pod_uid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}, Caller{UID: 2000}, procNeeds{}},
	} {
		var entries []Entry
		for _, s := range tc.entries {
			entries = append(entries, parse(s))
		}
		if got := needsOf(entries, tc.who); got != tc.want {
			t.Errorf("%s: needsOf(%v, uid %d gid %d) = %+v, want %+v", tc.name, tc.entries, tc.who.UID, tc.who.GID, got, tc.want)
		}
	}
}

// Slots keep a user id only while its callers' work holds or waits for
// one: callers of ever new ids (a user's subordinate ids) leave nothing
// behind. A user's share holds while one of its works waits.
func TestSlotsForgetAUserIDOnceDone(t *testing.T) {
	s := newSlots(8, 1)
	ctx := context.Background()
	for uid := uint32(100); uid < 200; uid++ {
		release, err := s.take(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	held, err := s.take(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.take(ended, 7); err == nil {
		t.Fatal("a second slot of user id 7 was given while its one slot was held")
	}
	s.mu.Lock()
	n := len(s.byUID)
	s.mu.Unlock()
	if n != 1 {
		t.Errorf("slots keep %d user ids while one holds a slot, want 1", n)
	}
	held()
	s.mu.Lock()
	n = len(s.byUID)
	s.mu.Unlock()
	if n != 0 || len(s.all) != 0 {
		t.Errorf("after every release: %d user ids kept, %d slots taken; want none", n, len(s.all))
	}
}

// holdShare takes every slot of s that the callers of user id uid get
// at once (with a call already ended: none is waited for), holds them
// until the test ends, and is how many it got.
func holdShare(t *testing.T, s *slots, uid uint32) int {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	held := 0
	for ; held <= cap(s.all); held++ {
		release, err := s.take(ended, uid)
		if err != nil {
			break
		}
		t.Cleanup(release)
	}
	return held
}
