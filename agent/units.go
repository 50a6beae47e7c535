package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// systemdRuntimeUnits is systemd's runtime unit directory. The agent's /run
// becomes the new root's /run, so units written here are what systemd
// finds at its start.
const systemdRuntimeUnits = "/run/systemd/system"

// mountUnits describes the state partition and the persistent bind mounts
// the agent made as systemd mount units. systemd sees those mounts anyway
// (from /proc/self/mountinfo), but a mount without a unit file gets no
// Requires= from RequiresMountsFor=: at shutdown systemd-journal-flush.service
// (which makes journald let go of /var/log/journal) is then never stopped,
// and unmounting /var/log fails with "target is busy". With unit files the
// mounts are ordered and stopped as if fstab had them. An init that is not
// systemd ignores the files.
func mountUnits(stateDev, stateMnt, node string, persisted []string) map[string]string {
	units := map[string]string{}
	if stateDev == "" || len(persisted) == 0 {
		return units
	}
	if g, ok := strings.CutPrefix(stateDev, "PARTUUID="); ok {
		// What= wants a path; udev makes this one in the booted system.
		stateDev = "/dev/disk/by-partuuid/" + strings.ToLower(g)
	}
	units[unitPathName(stateMnt)+".mount"] = fmt.Sprintf(`# Written by imprint's agent at boot.
[Unit]
Description=imprint state partition

[Mount]
What=%s
Where=%s
Type=ext4
Options=noatime
`, stateDev, stateMnt)
	for _, p := range persisted {
		units[unitPathName(p)+".mount"] = fmt.Sprintf(`# Written by imprint's agent at boot.
[Unit]
Description=imprint persistent %s of node %s

[Mount]
What=%s
Where=%s
Options=bind
`, p, node, filepath.Join(stateMnt, "nodes", node, p), p)
	}
	return units
}

// writeUnits writes units into dir (systemdRuntimeUnits).
func writeUnits(dir string, units map[string]string) error {
	if len(units) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, content := range units {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// unitPathName is `systemd-escape --path`: the unit name of a mount point.
func unitPathName(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == ':':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}
