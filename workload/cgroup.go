package workload

import (
	"errors"
	"path"
	"strings"
)

// unifiedCgroup is the cgroup v2 path of a /proc/PID/cgroup: its "0::"
// line's, as the reader's cgroup namespace sees it. A host with cgroup
// v1 alone has no such line; a process outside the reader's cgroup
// namespace has a path that climbs out of it ("/../x"), which names no
// cgroup the reader's selectors can name.
func unifiedCgroup(b []byte) (string, error) {
	var cg string
	found := false
	for line := range strings.Lines(string(b)) {
		p, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "0::")
		if !ok {
			continue
		}
		// One line only: a kernel that let a cgroup v1 name hold a
		// newline (renamed, before Linux refused it) could show a line
		// of the name's choosing.
		if found {
			return "", errors.New("the caller's /proc/PID/cgroup has more than one cgroup v2 line")
		}
		found, cg = true, p
	}
	if !found {
		return "", errors.New("the caller has no cgroup v2 path (a host with cgroup v1 alone)")
	}
	if !strings.HasPrefix(cg, "/") || path.Clean(cg) != cg || cg == "/.." || strings.HasPrefix(cg, "/../") {
		return "", errors.New("the caller's cgroup is outside this process's cgroup namespace")
	}
	return cg, nil
}

// systemdUnit is the systemd unit whose cgroup holds a process in the
// cgroup cg: the first component of cg past its slices, a service or a
// scope ("/system.slice/nginx.service/x" is in nginx.service; a user's
// own units, below user@UID.service, are in user@UID.service). "" when
// there is none: a process at the root, or in a cgroup that systemd did
// not make. Only root (and systemd) makes the cgroups of that level: a
// user whose manager systemd delegates a subtree to makes cgroups below
// its user@UID.service only. systemd names a unit's cgroup after the
// unit, but with a '_' before a name the kernel could take for its own
// ("_io.service" for io.service): the unit's name is without it.
func systemdUnit(cg string) string {
	for c := range strings.SplitSeq(strings.TrimPrefix(cg, "/"), "/") {
		switch {
		case strings.HasSuffix(c, ".slice"):
			continue
		case strings.HasSuffix(c, ".service") || strings.HasSuffix(c, ".scope"):
			return strings.TrimPrefix(c, "_")
		}
		return ""
	}
	return ""
}

// containerID is the ID of the container whose cgroup holds a process in
// the cgroup cg, as container runtimes name their cgroups: 64 hex digits,
// a component of its own or between '-', ':' and '.' in one
// ("/system.slice/docker-<id>.scope", "/docker/<id>",
// ".../cri-containerd-<id>.scope", ".../crio-<id>.scope",
// ".../libpod-<id>.scope", ".../libpod-payload-<id>",
// ".../kubepods-pod<uid>.slice:cri-containerd:<id>"), the first in cg:
// a container whose cgroups it may write (systemd's in a container, or a
// runtime nested in it) makes cgroups below its own, named as it likes,
// another container's too, and its processes are still in it. A
// runtime's monitor beside a container ("conmon") is not in it, nor is a
// Podman pod's cgroup (a bare ID below "libpod_parent", with the cgroupfs
// driver) a container's. "" when there is none.
func containerID(cg string) string {
	id, _ := containerAt(cg)
	return id
}

// containerAt is containerID's ID and the index of the component of cg
// (split at '/') that holds it; -1 when there is none.
func containerAt(cg string) (string, int) {
	comps := strings.Split(cg, "/")
	for i, c := range comps {
		if strings.Contains(c, "conmon") || (i > 0 && comps[i-1] == "libpod_parent" && len(c) == 64 && isHex(c)) {
			continue
		}
		var found string
		for f := range strings.FieldsFuncSeq(c, func(r rune) bool { return r == '-' || r == ':' || r == '.' }) {
			if len(f) == 64 && isHex(f) {
				found = strings.ToLower(f)
			}
		}
		if found != "" {
			return found, i
		}
	}
	return "", -1
}

// podUID is the UID of the Kubernetes pod whose cgroup holds a process
// in the cgroup cg, as the kubelet names its cgroups: "pod<uid>" (the
// cgroupfs driver), "kubepods-<qos>-pod<uid>.slice" with '_' for each
// '-' of the UID (the systemd driver). The kubelet makes a pod's cgroup
// above its containers': a component past the first that names a
// container (containerAt) is one a container made, and names no pod.
// "" when there is none.
func podUID(cg string) string {
	comps := strings.Split(cg, "/")
	if _, i := containerAt(cg); i >= 0 {
		comps = comps[:i+1]
	}
	for _, c := range comps {
		c, _, _ = strings.Cut(c, ":") // containerd's "<slice>:<runtime>:<id>"
		c = strings.TrimSuffix(c, ".slice")
		i := strings.LastIndex(c, "pod")
		if i < 0 || (i > 0 && c[i-1] != '-') {
			continue
		}
		if uid := strings.ReplaceAll(c[i+3:], "_", "-"); isUUID(uid) {
			return strings.ToLower(uid)
		}
	}
	return ""
}

func isHex(s string) bool {
	for i := range len(s) {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(s[i])) {
			return false
		}
	}
	return true
}

// isUUID reports whether s is written as a UUID: 8-4-4-4-12 hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isHex(s[i : i+1]) {
			return false
		}
	}
	return true
}
