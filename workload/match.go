package workload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
)

// attestation is what is known of a call's caller: what the kernel said
// when it connected, and what else a selector asks, found out when
// first needed during the call, once.
type attestation struct {
	ctx     context.Context
	who     Caller
	digests *digests
	// names are the user's and group's names by kind ("user", "group"),
	// looked up at the call (the user database as it is then), and
	// nameErrs why one could not be.
	names    map[string]string
	nameErrs map[string]error
}

func newAttestation(ctx context.Context, who Caller, d *digests) *attestation {
	return &attestation{ctx: ctx, who: who, digests: d, names: map[string]string{}, nameErrs: map[string]error{}}
}

// errUnknownName is a caller's user or group id that has no name.
var errUnknownName = errors.New("no name")

// byCost is sels in the order they are checked: the cheapest to find
// out first, so that an entry that does not select a caller by its ids
// costs no lookup.
func byCost(sels []Selector) []Selector {
	return slices.SortedStableFunc(slices.Values(sels), func(a, b Selector) int {
		return cmp.Compare(selectorKinds[a.Kind].cost, selectorKinds[b.Kind].cost)
	})
}

// selects reports whether every one of sels (byCost) matches the
// caller. A selector whose answer could not be found out does not
// match; err says why (for the log, not the caller).
func (a *attestation) selects(sels []Selector) (ok bool, err error) {
	for _, s := range sels {
		if ok, err := a.matches(s); !ok {
			return false, err
		}
	}
	return true, nil
}

// idsMatch reports, for a selector of the caller's user or primary
// group id (known), whether it picks who: what the kernel said when it
// connected settles it.
func idsMatch(s Selector, who Caller) (match, known bool) {
	switch s.Kind {
	case "uid":
		return strconv.FormatUint(uint64(who.UID), 10) == s.Value, true
	case "gid":
		return strconv.FormatUint(uint64(who.GID), 10) == s.Value, true
	}
	return false, false
}

func (a *attestation) matches(s Selector) (bool, error) {
	if match, known := idsMatch(s, a.who); known {
		return match, nil
	}
	switch s.Kind {
	case "user", "group":
		name, err := a.name(s.Kind)
		if errors.Is(err, errUnknownName) {
			return false, nil
		}
		return err == nil && name == s.Value, err
	}
	p := a.who.proc
	switch {
	case p == nil:
		return false, errors.New("the caller's process was not read")
	case p.err != nil:
		return false, p.err
	}
	switch s.Kind {
	case "supplementary_gid":
		n, _ := strconv.ParseUint(s.Value, 10, 32)
		return slices.Contains(p.groups, uint32(n)), nil
	case "supplementary_group":
		g, err := within(a.ctx, func() (*user.Group, error) { return user.LookupGroup(s.Value) })
		if errors.As(err, new(user.UnknownGroupError)) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("the group %s: %w", s.Value, err)
		}
		n, err := strconv.ParseUint(g.Gid, 10, 32)
		return err == nil && slices.Contains(p.groups, uint32(n)), nil
	case "cgroup", "systemd_unit", "container_id", "pod_uid":
		if p.cgroupErr != nil {
			return false, p.cgroupErr
		}
		got := p.cgroup
		switch s.Kind {
		case "systemd_unit":
			got = systemdUnit(p.cgroup)
		case "container_id":
			got = containerID(p.cgroup)
		case "pod_uid":
			got = podUID(p.cgroup)
		}
		return got != "" && got == s.Value, nil
	case "path":
		if p.pathErr != nil {
			return false, p.pathErr
		}
		return p.exe == s.Value, nil
	case "sha256":
		if p.fileErr != nil {
			return false, p.fileErr
		}
		if p.file == nil {
			return false, errors.New("the caller's executable was not kept open")
		}
		sum, err := a.digests.of(a.ctx, p.file, p.key, a.who.UID)
		return err == nil && sum == s.Value, err
	}
	return false, fmt.Errorf("unknown selector kind %q", s.Kind)
}

// name is the name of the caller's user id (kind "user") or primary
// group id ("group"), as the user database has it now.
func (a *attestation) name(kind string) (string, error) {
	if n, ok := a.names[kind]; ok {
		return n, a.nameErrs[kind]
	}
	n, err := within(a.ctx, func() (string, error) {
		if kind == "user" {
			u, err := user.LookupId(strconv.FormatUint(uint64(a.who.UID), 10))
			if errors.As(err, new(user.UnknownUserIdError)) {
				return "", errUnknownName
			}
			if err != nil {
				return "", err
			}
			return u.Username, nil
		}
		g, err := user.LookupGroupId(strconv.FormatUint(uint64(a.who.GID), 10))
		if errors.As(err, new(user.UnknownGroupIdError)) {
			return "", errUnknownName
		}
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
	if err != nil && !errors.Is(err, errUnknownName) {
		err = fmt.Errorf("the %s name of the caller: %w", kind, err)
	}
	a.names[kind], a.nameErrs[kind] = n, err
	return n, err
}

// maxLookups bounds the lookups under way at once (within): those that
// hang hold their slots, and the calls after wait for one, no longer
// than they last, rather than leave ever more of them behind.
const maxLookups = 64

var lookups = make(chan struct{}, maxLookups)

// within is f's answer, or ctx's error when ctx ends first: a lookup
// that hangs (a user database on the network that does not answer)
// holds its call no longer than the call lasts. f goes on meanwhile,
// in one of maxLookups slots, and must end by itself.
func within[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type answer struct {
		v   T
		err error
	}
	select {
	case lookups <- struct{}{}:
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
	done := make(chan answer, 1)
	go func() {
		defer func() { <-lookups }()
		v, err := f()
		done <- answer{v, err}
	}()
	select {
	case a := <-done:
		return a.v, a.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
