package bootloader

import (
	"context"
	"strings"
	"testing"
)

func TestLocalEntryRunsTheAgentAndKeepsTheImagesInitrdAsFallback(t *testing.T) {
	f := DirFS(t.TempDir())
	o := testInstall(t, f)
	o.Cmdline = "root=/dev/sda1 ro console=ttyS0"
	o.AgentInitrd = []byte("agent")
	m, err := Install(context.Background(), f, o)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range m.Entries {
		ids = append(ids, e.ID)
	}
	if got := strings.Join(ids, " "); got != "local local-initrd diskless netboot" {
		t.Fatalf("entries: %s", got)
	}
	local := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-local.conf"))))
	if local["initrd"][0] != "/EFI/imprint/v1/agent.img" ||
		local["options"][0] != "root=PARTUUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee imprint.mode=local ro console=ttyS0 imprint.entry=local" {
		t.Fatalf("local entry: %v", local)
	}
	own := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-local-initrd.conf"))))
	if own["initrd"][0] != "/EFI/imprint/v1/initrd.img" || !strings.HasPrefix(own["options"][0], "root=PARTUUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee ") {
		t.Fatalf("fallback entry: %v", own)
	}
	if m.Default != TypeLocal {
		t.Fatalf("default %q", m.Default)
	}
}
