package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnitPathNameIsSystemdEscapePath(t *testing.T) {
	for in, want := range map[string]string{
		"/var/log": "var-log", "/var/lib/systemd": "var-lib-systemd", "/run/imprint/state": "run-imprint-state",
		"/var/lib/my-app": `var-lib-my\x2dapp`, "/srv/.hidden/x": "srv-.hidden-x", "/.x": `\x2ex`, "/a b": `a\x20b`,
		"/": "-", "/var/log/": "var-log",
	} {
		if got := unitPathName(in); got != want {
			t.Errorf("unitPathName(%q) = %q, want %q", in, got, want)
		}
		if _, err := exec.LookPath("systemd-escape"); err == nil {
			out, err := exec.Command("systemd-escape", "--path", in).Output()
			if err == nil && strings.TrimSpace(string(out)) != want {
				t.Errorf("systemd-escape --path %q says %q, the table %q", in, out, want)
			}
		}
	}
}

// Persistent paths are bind mounts from the state partition; systemd must
// see them as units with a file (as if fstab had them), else it never stops
// systemd-journal-flush.service before unmounting /var/log at shutdown.
func TestMountUnitsForPersistentPaths(t *testing.T) {
	units := mountUnits("/dev/vda4", "/run/imprint/state", "node01", []string{"/var/log", "/var/lib/systemd"})
	var names []string
	for n := range units {
		names = append(names, n)
	}
	if len(units) != 3 {
		t.Fatalf("units %v, want the state mount and two binds", names)
	}
	for name, want := range map[string][]string{
		"run-imprint-state.mount": {"What=/dev/vda4\n", "Where=/run/imprint/state\n", "Type=ext4\n"},
		"var-log.mount":           {"What=/run/imprint/state/nodes/node01/var/log\n", "Where=/var/log\n", "Options=bind\n"},
		"var-lib-systemd.mount":   {"What=/run/imprint/state/nodes/node01/var/lib/systemd\n", "Where=/var/lib/systemd\n"},
	} {
		for _, w := range want {
			if !strings.Contains(units[name], w) {
				t.Errorf("%s lacks %q:\n%s", name, w, units[name])
			}
		}
	}
	if u := mountUnits("PARTUUID=ABC-D", "/run/imprint/state", "n", []string{"/var/log"}); !strings.Contains(u["run-imprint-state.mount"], "What=/dev/disk/by-partuuid/abc-d\n") {
		t.Errorf("imprint.state=PARTUUID=: %s", u["run-imprint-state.mount"])
	}
	if u := mountUnits("", "", "node01", []string{"/var/log"}); len(u) != 0 {
		t.Errorf("no state partition: want no units, have %v", u)
	}
	dir := filepath.Join(t.TempDir(), "run/systemd/system")
	if err := writeUnits(dir, units); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "var-log.mount"))
	if err != nil || string(b) != units["var-log.mount"] {
		t.Fatalf("written var-log.mount: %q, %v", b, err)
	}
}
