package workload

import "testing"

// What a process's cgroup says of it, as the cgroups of systemd, the
// container runtimes and the kubelet are named.
func TestCgroupNames(t *testing.T) {
	const (
		id         = "4e9c1e0d2b7f4a6e8c3d5b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f10"
		pod        = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
		podSystemd = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0"
		other      = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	)
	for _, tc := range []struct {
		cgroup, unit, container, pod string
	}{
		{"/", "", "", ""},
		{"/init.scope", "init.scope", "", ""},
		{"/system.slice/nginx.service", "nginx.service", "", ""},
		{"/system.slice/nginx.service/worker", "nginx.service", "", ""},
		{"/user.slice/user-1000.slice/session-3.scope", "session-3.scope", "", ""},
		// A user's own units, below the subtree systemd delegates to
		// its manager, are in the manager's unit.
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/agent.service", "user@1000.service", "", ""},
		// Docker, the systemd driver and cgroupfs.
		{"/system.slice/docker-" + id + ".scope", "docker-" + id + ".scope", id, ""},
		{"/docker/" + id, "", id, ""},
		// Podman: its monitor (conmon) is not in the container.
		{"/machine.slice/libpod-" + id + ".scope/container", "libpod-" + id + ".scope", id, ""},
		{"/machine.slice/libpod-conmon-" + id + ".scope", "libpod-conmon-" + id + ".scope", "", ""},
		// The kubelet: the systemd driver (containerd, CRI-O) and cgroupfs.
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podSystemd + ".slice/cri-containerd-" + id + ".scope", "cri-containerd-" + id + ".scope", id, pod},
		{"/kubepods.slice/kubepods-pod" + podSystemd + ".slice/crio-" + id + ".scope", "crio-" + id + ".scope", id, pod},
		{"/kubepods/burstable/pod" + pod + "/" + id, "", id, pod},
		{"/system.slice/containerd.service/kubepods-burstable-pod" + podSystemd + ".slice:cri-containerd:" + id, "containerd.service", id, pod},
		// Podman under a systemd unit (Quadlet's --cgroups=split), and a
		// Podman pod with the cgroupfs driver, whose cgroup is its bare ID.
		{"/system.slice/web.service/libpod-payload-" + id, "web.service", id, ""},
		{"/libpod_parent/" + other + "/libpod-" + id, "", id, ""},
		// systemd writes '_' before a unit's name the kernel could take
		// for its own (io.service).
		{"/system.slice/_io.service", "io.service", "", ""},
		// A container that may write its cgroups (systemd in it, a
		// runtime nested in it) names those below its own as it likes:
		// its processes are still in it, and in no pod it names.
		{"/machine.slice/libpod-" + id + ".scope/docker-" + other + ".scope", "libpod-" + id + ".scope", id, ""},
		{"/system.slice/docker-" + id + ".scope/docker/" + other, "docker-" + id + ".scope", id, ""},
		{"/system.slice/docker-" + id + ".scope/kubepods/besteffort/pod" + pod + "/" + other, "docker-" + id + ".scope", id, ""},
		{"/kubepods/besteffort/pod" + pod + "/" + id + "/pod" + pod[:35] + "1/" + other, "", id, pod},
		// Look-alikes.
		{"/docker/" + id[:63], "", "", ""},
		{"/docker/" + id + "0", "", "", ""},
		{"/x/notapod" + pod, "", "", ""},
		{"/x/pod" + pod[:35], "", "", ""},
	} {
		if got := systemdUnit(tc.cgroup); got != tc.unit {
			t.Errorf("systemdUnit(%q) = %q, want %q", tc.cgroup, got, tc.unit)
		}
		if got := containerID(tc.cgroup); got != tc.container {
			t.Errorf("containerID(%q) = %q, want %q", tc.cgroup, got, tc.container)
		}
		if got := podUID(tc.cgroup); got != tc.pod {
			t.Errorf("podUID(%q) = %q, want %q", tc.cgroup, got, tc.pod)
		}
	}
}

// The cgroup v2 path of a /proc/PID/cgroup is its "0::" line's, one this
// process's cgroup namespace sees.
func TestUnifiedCgroup(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "": an error
	}{
		{"0::/system.slice/nginx.service\n", "/system.slice/nginx.service"},
		{"12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/x.service\n0::/system.slice/x.service\n", "/system.slice/x.service"},
		{"0::/\n", "/"},
		{"12:pids:/x\n1:name=systemd:/x\n", ""},   // cgroup v1 alone
		{"0::/../../other.slice/x.service\n", ""}, // outside this cgroup namespace
		{"0::/..\n", ""},
		{"0::\n", ""},
		{"0::x\n", ""},
		// Two cgroup v2 lines: one in a cgroup v1 name (which a kernel
		// before Linux refused a newline in a renamed one could show).
		{"1:name=systemd:/user.slice/x\n0::/system.slice/nginx.service\n0::/user.slice/user-1000.slice/session-1.scope\n", ""},
		{"0::/system.slice/a.service\n0::/system.slice/a.service\n", ""},
		{"", ""},
	} {
		got, err := unifiedCgroup([]byte(tc.in))
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("unifiedCgroup(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if got, err := unifiedCgroup([]byte("0::/..a/b\n")); err != nil || got != "/..a/b" {
		t.Errorf(`a cgroup named "..a": %q, %v`, got, err)
	}
}

// FuzzCgroupNames hands the readers of a cgroup what /proc/PID/cgroup
// may say, whose names a user to whom cgroups are delegated chooses:
// they never panic, and a container ID or pod UID they find is written
// as its selector's value is.
func FuzzCgroupNames(f *testing.F) {
	for _, s := range []string{
		"0::/system.slice/nginx.service\n",
		"0::/system.slice/docker-4e9c1e0d2b7f4a6e8c3d5b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f10.scope\n",
		"0::/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/4e9c1e0d2b7f4a6e8c3d5b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f10\n",
		"0::/system.slice/containerd.service/kubepods-pod0f1e2d3c_4b5a_6978_8796_A5B4C3D2E1F0.slice:cri-containerd:4E9C1E0D2B7F4A6E8C3D5B1A0F9E8D7C6B5A4F3E2D1C0B9A8F7E6D5C4B3A2F10\n",
		"1:name=systemd:/x\n0::/../x\n",
		"0::/pod/pod-/-pod.slice::\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cg, err := unifiedCgroup(b)
		if err != nil {
			return
		}
		_ = systemdUnit(cg)
		if id := containerID(cg); id != "" {
			if v, err := checkDigest(id); err != nil || v != id {
				t.Errorf("containerID(%q) = %q, not a container_id selector's value", cg, id)
			}
		}
		if uid := podUID(cg); uid != "" {
			if v, err := checkPodUID(uid); err != nil || v != uid {
				t.Errorf("podUID(%q) = %q, not a pod_uid selector's value", cg, uid)
			}
		}
	})
}
