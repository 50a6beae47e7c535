package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

const testIdentityConf = `class node[01-64] compute
class /gpu[0-9]+/ gpu
class gpu07 gpu.a100
file /etc/fstab
persistent /var/log
`

func identityTree(t *testing.T, conf string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	makeRootfs(t, dir, 4096)
	files := map[string]string{
		"etc/imprint/identity.conf": conf,
		"etc/fstab":                 "plain\n", "etc/fstab.compute": "compute\n", "etc/fstab.gpu": "gpu\n",
		"etc/imprint/layers/class/gpu/etc/gpu.conf": "gpu layer\n",
	}
	for _, e := range extra {
		files[e] = e
	}
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestIdentityPreviewShowsWhatANodeGets(t *testing.T) {
	dir := identityTree(t, testIdentityConf)
	out := mustRun(t, "identity", "preview", "--rootfs", dir, "--node", "gpu07")
	for _, want := range []string{"class gpu.a100 (fallback gpu.a100 -> gpu -> default)", "hostname gpu07",
		"file /etc/fstab <- /etc/fstab.gpu (gpu)", "layer /etc/imprint/layers/class/gpu (class gpu)", "persistent /var/log"} {
		if !strings.Contains(out, want) {
			t.Errorf("preview lacks %q:\n%s", want, out)
		}
	}
	var p struct {
		Class     string `json:"class"`
		MachineID string `json:"machine_id"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "identity", "preview", "--rootfs", dir, "--node", "node01", "--json")), &p); err != nil || p.Class != "compute" || len(p.MachineID) != 32 {
		t.Errorf("preview --json: %+v %v", p, err)
	}
	code, _, errs := run(t, "identity", "preview", "--rootfs", dir, "--node", "bad/name")
	if code == 0 || !strings.Contains(errs, "--node") {
		t.Errorf("a bad node name: exit %d, %s", code, errs)
	}
	code, _, errs = run(t, "identity", "preview", "--node", "n1")
	if code == 0 || !strings.Contains(errs, "--rootfs DIR or --image") {
		t.Errorf("no tree: exit %d, %s", code, errs)
	}
}

func TestIdentityCheckAndBuildRefuseABadConfig(t *testing.T) {
	need(t, "mkfs.ext4")
	good := identityTree(t, testIdentityConf)
	if out := mustRun(t, "identity", "check", "--rootfs", good); !strings.Contains(out, "ok") {
		t.Errorf("check of a good tree: %s", out)
	}
	bad := identityTree(t, testIdentityConf, "etc/hosts.node17", "etc/fstab.storage")
	code, _, errs := run(t, "identity", "check", "--rootfs", bad)
	if code == 0 || !strings.Contains(errs, "/etc/hosts.node17 looks like a variant of /etc/hosts") || !strings.Contains(errs, "/etc/fstab.storage") {
		t.Errorf("check of a bad tree: exit %d\n%s", code, errs)
	}
	store := filepath.Join(t.TempDir(), "store")
	code, _, errs = run(t, "build", "--store", store, "--name", "bad", "--rootfs", bad)
	if code == 0 || !strings.Contains(errs, "--rootfs "+bad) || !strings.Contains(errs, "hosts.node17") {
		t.Errorf("build of a bad tree: exit %d\n%s", code, errs)
	}
	// The image in a store is previewed from its own root partition.
	b := buildImage(t, "--store", store, "--name", "good", "--rootfs", good)
	out := mustRun(t, "identity", "preview", "--image", b.name, "--from", b.store, "--node", "node05")
	if !strings.Contains(out, "file /etc/fstab <- /etc/fstab.compute (compute)") {
		t.Errorf("preview --image:\n%s", out)
	}
	mustRun(t, "identity", "check", "--image", b.name, "--from", b.store)
}

func TestBuildFromATreeCarriesItsAgent(t *testing.T) {
	need(t, "mkfs.ext4")
	// Any static ELF passes for the agent's /init here; busybox-static is
	// a test dependency already.
	self := "/bin/busybox"
	testenv.NeedFile(t, self, "busybox-static")
	dir := identityTree(t, testIdentityConf)
	mods := filepath.Join(dir, "lib/modules/6.1.0-test")
	os.MkdirAll(mods, 0o755)
	os.WriteFile(filepath.Join(mods, "modules.dep"), nil, 0o644)
	store := filepath.Join(t.TempDir(), "store")
	code, out, errs := run(t, "build", "--store", store, "--name", "withagent", "--rootfs", dir, "--agent-imprint", self)
	if code != 0 || !strings.Contains(out, "agent initramfs made from the tree's /lib/modules/6.1.0-test") {
		t.Fatalf("build: exit %d\n%s%s", code, out, errs)
	}
	b := buildImage(t, "--store", store, "--name", "withagent", "--rootfs", dir, "--agent-imprint", self)
	if b.m.Boot.Agent == nil {
		t.Fatal("the manifest carries no agent")
	}
	b = buildImage(t, "--store", store, "--name", "noagent", "--rootfs", dir, "--no-agent")
	if b.m.Boot.Agent != nil {
		t.Fatal("--no-agent: the manifest carries an agent")
	}
	// A tree without modules builds, and says why it has no agent.
	plain := identityTree(t, testIdentityConf)
	code, _, errs = run(t, "build", "--store", store, "--name", "plain", "--rootfs", plain, "--agent-imprint", self)
	if code != 0 || !strings.Contains(errs, "note: the image carries no agent") || !strings.Contains(errs, "no /lib/modules/RELEASE") {
		t.Errorf("build without modules: exit %d\n%s", code, errs)
	}
	code, _, errs = run(t, "build", "--store", store, "--name", "x", "--rootfs", dir, "--agent", "/nonexistent", "--no-agent")
	if code == 0 || !strings.Contains(errs, "contradict") {
		t.Errorf("--agent with --no-agent: exit %d %s", code, errs)
	}
}
