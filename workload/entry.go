package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Caller is the process on the other end of a connection, as the kernel
// says when it connects.
type Caller struct {
	PID      int32
	UID, GID uint32
	// proc is what was read of its process when it connected, nil when
	// no selector asks it.
	proc *process
}

// Selector picks callers by one thing known of them, Kind, having the
// value Value, as SPIRE's unix workload attestor names them:
//   - "uid", "gid": the process's user id, its primary group id (as the
//     kernel says when it connects; decimal);
//   - "user", "group": the name of that user id, of that group id, in
//     the host's user database as it is at each call;
//   - "supplementary_gid", "supplementary_group": one of the process's
//     supplementary group ids, or the id of the group so named at each
//     call (an entry may name several, all of which it must have);
//   - "path": the path of the process's executable, which must name
//     the file it runs (absolute, in clean form, with no symbolic link
//     in it, as /proc/PID/exe gives it);
//   - "sha256": the SHA-256 digest of the executable the process runs
//     (64 hex digits, written lowercase);
//   - "cgroup": the path of the process's cgroup v2, absolute and in
//     clean form, as /proc/PID/cgroup gives it
//     ("/system.slice/nginx.service");
//   - "systemd_unit": the systemd unit (a service or a scope) whose
//     cgroup holds the process: the first component of its cgroup past
//     the slices, without the '_' systemd may write before it
//     ("nginx.service"; a user's own units are all in
//     "user@UID.service");
//   - "container_id": the ID of the container whose cgroup holds the
//     process (64 hex digits, written lowercase), as Docker, containerd,
//     CRI-O and Podman name their cgroups: the first in its cgroup's
//     path, not one a container named a cgroup below its own after;
//   - "pod_uid": the UID of the Kubernetes pod whose cgroup holds the
//     process, as the kubelet names its cgroups, above the container's.
//
// A script's executable is its interpreter: its path and digest pick
// every script that interpreter runs.
//
// What a process runs, its supplementary groups and its cgroup are read
// from /proc when it connects, and checked to be of the process that
// connected.
type Selector struct {
	Kind  string
	Value string
}

func (s Selector) String() string { return s.Kind + ":" + s.Value }

// selectorKind is how a kind of selector's value is written, and how
// costly it is to find out of a caller (cheaper ones are checked first).
type selectorKind struct {
	// check refuses a value not well written, and is the value as
	// String writes it.
	check func(string) (string, error)
	cost  int
	// repeats: an entry may name several (all of which must match); of
	// any other kind, a second one is refused: it would select nothing.
	repeats bool
}

var selectorKinds = map[string]selectorKind{
	"uid":                 {check: checkID, cost: 0},
	"gid":                 {check: checkID, cost: 0},
	"user":                {check: checkName, cost: 1},
	"group":               {check: checkName, cost: 1},
	"supplementary_gid":   {check: checkID, cost: 1, repeats: true},
	"path":                {check: checkPath, cost: 1},
	"supplementary_group": {check: checkName, cost: 2, repeats: true},
	"sha256":              {check: checkDigest, cost: 3},
	"cgroup":              {check: checkPath, cost: 1},
	"systemd_unit":        {check: checkUnit, cost: 1},
	"container_id":        {check: checkDigest, cost: 1},
	"pod_uid":             {check: checkPodUID, cost: 1},
}

// selectorKindNames are the kinds, in the order errors list them.
const selectorKindNames = "uid, gid, user, group, supplementary_gid, supplementary_group, path, sha256, cgroup, systemd_unit, container_id, pod_uid"

// Bounds of an entry.
const (
	maxSelectors     = 16
	maxNameBytes     = 256
	maxSelectorBytes = 4096
)

func checkID(v string) (string, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return "", errors.New("not a decimal id from 0 to 4294967295")
	}
	return strconv.FormatUint(n, 10), nil
}

func checkName(v string) (string, error) {
	switch {
	case v == "":
		return "", errors.New("an empty name")
	case len(v) > maxNameBytes:
		return "", fmt.Errorf("a name longer than %d bytes", maxNameBytes)
	case strings.ContainsAny(v, ":,"):
		return "", errors.New("a name with ':' or ','")
	}
	return v, nil
}

func checkPath(v string) (string, error) {
	if !strings.HasPrefix(v, "/") || filepath.Clean(v) != v {
		return "", errors.New("not an absolute path in clean form")
	}
	return v, nil
}

func checkDigest(v string) (string, error) {
	if b, err := hex.DecodeString(v); err != nil || len(b) != sha256.Size {
		return "", errors.New("not 64 hex digits")
	}
	return strings.ToLower(v), nil
}

// checkUnit refuses what is no systemd service or scope name: a
// service's or a scope's suffix, and only the characters systemd
// allows in a unit name.
func checkUnit(v string) (string, error) {
	base, ok := strings.CutSuffix(v, ".service")
	if !ok {
		base, ok = strings.CutSuffix(v, ".scope")
	}
	if !ok || base == "" || len(v) > maxNameBytes || strings.ContainsFunc(base, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":-_.@\\", r))
	}) {
		return "", errors.New("not a systemd service or scope name (NAME.service, NAME.scope)")
	}
	return v, nil
}

func checkPodUID(v string) (string, error) {
	if !isUUID(v) {
		return "", errors.New("not a pod UID (8-4-4-4-12 hex digits)")
	}
	return strings.ToLower(v), nil
}

// Entry gives the callers that all of its selectors pick the identity
// ID.
type Entry struct {
	Selectors []Selector
	ID        spiffeid.ID
}

func (e Entry) String() string {
	sels := make([]string, len(e.Selectors))
	for i, s := range e.Selectors {
		sels[i] = s.String()
	}
	return strings.Join(sels, ",") + "=" + e.ID.String()
}

// ErrEntry is the error of an entry that is not well formed.
var ErrEntry = errors.New("workload entry")

// ParseEntry reads an entry written as SELECTOR[,SELECTOR...]=SPIFFE-ID,
// each selector KIND:VALUE (see Selector; SPIRE's "unix:" before the
// kind may be given, and is dropped), all of which must match:
// "uid:1000=spiffe://example.org/agent/planner",
// "uid:1000,group:agents=spiffe://example.org/agent/planner". A SPIFFE
// ID holds no '=' and a selector's value no ',': the last '=' ends the
// selectors, and each ',' ends one.
func ParseEntry(s string) (Entry, error) {
	i := strings.LastIndexByte(s, '=')
	if i < 0 {
		return Entry{}, fmt.Errorf("%w %q: want SELECTOR[,SELECTOR...]=SPIFFE-ID, e.g. uid:1000=spiffe://example.org/agent/planner", ErrEntry, s)
	}
	sels, id := s[:i], s[i+1:]
	var e Entry
	for sel := range strings.SplitSeq(sels, ",") {
		if len(e.Selectors) == maxSelectors {
			return Entry{}, fmt.Errorf("%w %q: more than %d selectors", ErrEntry, s, maxSelectors)
		}
		sel, err := parseSelector(sel)
		if err != nil {
			return Entry{}, fmt.Errorf("%w %q: %v", ErrEntry, s, err)
		}
		for _, o := range e.Selectors {
			if o.Kind == sel.Kind && !selectorKinds[sel.Kind].repeats {
				return Entry{}, fmt.Errorf("%w %q: %s is given twice: no process has two", ErrEntry, s, sel.Kind)
			}
			if o == sel {
				return Entry{}, fmt.Errorf("%w %q: %s is given twice", ErrEntry, s, sel)
			}
		}
		e.Selectors = append(e.Selectors, sel)
	}
	if err := checkBound(e.Selectors); err != nil {
		return Entry{}, fmt.Errorf("%w %q: %v", ErrEntry, s, err)
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return Entry{}, fmt.Errorf("%w %q: %v", ErrEntry, s, err)
	}
	if err := checkAgentID(sid); err != nil {
		return Entry{}, fmt.Errorf("%w %q: %v", ErrEntry, s, err)
	}
	e.ID = sid
	return e, nil
}

// checkBound refuses a selector with nothing beside it that binds it to
// the user:
//   - a path or sha256 selector without a uid, gid, user or group. What
//     a process runs is read once it has connected, and any local
//     process may connect, hand its connection to a process of its own
//     (fork, or a socket's message), then run the program at that path
//     (exec): it is read as that program, while its own code uses the
//     connection. A digest alone is also of what the file system
//     answers the digest's reading, and any user who may mount one
//     (FUSE, directly or under an overlay, in a user namespace of its
//     own) can answer it a trusted program's bytes while its process
//     runs others.
//   - a container_id or pod_uid selector without a uid, gid, user or
//     group. They are read from the names of the cgroups a process is
//     in, and systemd delegates a subtree of cgroups to each user's
//     manager (user@UID.service), where that user names its cgroups as
//     it likes: a container's or a pod's too.
func checkBound(sels []Selector) error {
	has := map[string]bool{}
	for _, s := range sels {
		has[s.Kind] = true
	}
	byIDs := has["uid"] || has["gid"] || has["user"] || has["group"]
	switch {
	case (has["path"] || has["sha256"]) && !byIDs:
		return errors.New("a path or sha256 selector needs a uid, gid, user or group beside it: any local process may connect, hand its connection to a process of its own, then run the program at that path (exec), and any user who may mount a file system of its own could answer the digest's reading a trusted program's bytes")
	case (has["container_id"] || has["pod_uid"]) && !byIDs:
		return errors.New("a container_id or pod_uid selector needs a uid, gid, user or group beside it: a user to whom systemd delegates cgroups names them as it likes, a container's or a pod's too")
	}
	return nil
}

// parseSelector reads one selector, KIND:VALUE.
func parseSelector(s string) (Selector, error) {
	if len(s) > maxSelectorBytes {
		return Selector{}, fmt.Errorf("a selector longer than %d bytes", maxSelectorBytes)
	}
	kind, val, ok := strings.Cut(strings.TrimPrefix(s, "unix:"), ":")
	k, known := selectorKinds[kind]
	if !ok || !known {
		return Selector{}, fmt.Errorf("the selector %q is not KIND:VALUE, KIND one of %s", s, selectorKindNames)
	}
	if !utf8.ValidString(val) || strings.ContainsFunc(val, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) {
		return Selector{}, fmt.Errorf("the %s %q is not printable UTF-8 text", kind, val)
	}
	v, err := k.check(val)
	if err != nil {
		return Selector{}, fmt.Errorf("the %s %q is %v", kind, val, err)
	}
	return Selector{Kind: kind, Value: v}, nil
}

// checkAgentID refuses an entry's identity that is not an agent's
// (spiffe://<trust domain>/agent/<name>). A node's own, above all,
// which the authority would renew for it: its caller would hold the
// node's credential, which obtains the SVIDs of every agent the node
// hosts, and the renewals would replace the node run's own.
func checkAgentID(id spiffeid.ID) error {
	if !strings.HasPrefix(id.Path(), "/agent/") {
		return fmt.Errorf("%s is not an agent's SPIFFE ID (spiffe://<trust domain>/agent/<name>)", id)
	}
	return nil
}
