package agent

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/builder"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// TestInstallTakesLoadersOnlyFromTheImage: the install mode's first source
// (a peer, as the server it booted from may be) sends a changed iPXE and
// systemd-boot; the agent passes them over and the disk gets the master's.
func TestInstallTakesLoadersOnlyFromTheImage(t *testing.T) {
	dir := t.TempDir()
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root.img")
	os.WriteFile(root, bytes.Repeat([]byte("root"), 256<<10), 0o644)
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte("not really a kernel"), 0o644)
	res, err := builder.Build(context.Background(), builder.Options{Store: st, Name: "n", Version: "1", ChunkSize: 64 << 10,
		Partitions: []builder.PartitionFile{{Name: "root", Path: root}}, Kernel: kernel, TmpDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	bad := map[string]bool{}
	for _, n := range []string{image.LoaderSystemdBoot, image.LoaderIPXEEFI} {
		if m.Loaders[n] == nil {
			t.Fatalf("the build host gave no %s (install systemd-boot-efi and ipxe): %q", n, res.Notes)
		}
		for _, h := range m.Loaders[n].Chunks {
			bad[h] = true
		}
	}
	rp, err := m.RootPartition()
	if err != nil {
		t.Fatal(err)
	}
	other := rp.Content.Chunks[0]
	otherPath := filepath.Join(st.Root, "chunks", other[:2], other)
	honest := &netboot.HTTP{Store: st.Root, Decider: netboot.Static{}}
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bad[filepath.Base(r.URL.Path)] {
			b, _ := os.ReadFile(otherPath)
			w.Write(b)
			return
		}
		honest.ServeHTTP(w, r)
	}))
	defer liar.Close()
	good := httptest.NewServer(honest)
	defer good.Close()

	target := filepath.Join(dir, "disk.img")
	f, _ := os.Create(target)
	f.Truncate(1 << 30)
	f.Close()
	var console bytes.Buffer
	a := &Agent{Console: &console, Root: dir, Params: Params{Image: "n:1", Sources: []string{liar.URL, good.URL}, Install: target}}
	srcs, err := a.sources()
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.resolve(context.Background(), srcs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.deployTo(context.Background(), srcs, r, target); err != nil {
		t.Fatalf("%v\n%s", err, console.String())
	}
	if !strings.Contains(console.String(), "trying the next source") {
		t.Errorf("the lying source's loader chunks were not refused:\n%s", console.String())
	}

	d, err := disk.OpenDisk(target, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	od, err := ondisk.ReadDisk(d)
	if err != nil {
		t.Fatal(err)
	}
	espP, _ := od.State.Table.ByRole(layout.RoleESP)
	fat, err := disk.OpenFAT(d, espP.Start, espP.Len)
	if err != nil {
		t.Fatal(err)
	}
	for file, name := range map[string]string{
		"/EFI/systemd/systemd-bootx64.efi": image.LoaderSystemdBoot,
		"/EFI/BOOT/BOOTX64.EFI":            image.LoaderSystemdBoot,
		"/EFI/imprint/ipxe.efi":            image.LoaderIPXEEFI,
	} {
		b, err := fat.ReadFile(file)
		if err != nil {
			t.Fatalf("ESP %s: %v", file, err)
		}
		if got := image.HashBytes(b); got != m.Loaders[name].SHA256 {
			t.Errorf("ESP %s: sha256 %s, the manifest's %s is %s", file, got, name, m.Loaders[name].SHA256)
		}
	}
}

// TestInstallBootWithoutLoaders: an image without systemd-boot installs
// without a boot menu, one without iPXE without a netboot entry, and the
// agent says so; nothing is fetched from elsewhere.
func TestInstallBootWithoutLoaders(t *testing.T) {
	c := &image.Content{}
	for _, tc := range []struct {
		name        string
		loaders     map[string]*image.Content
		skip, nonet bool
	}{
		{"both", map[string]*image.Content{image.LoaderSystemdBoot: c, image.LoaderIPXEEFI: c}, false, false},
		{"no iPXE", map[string]*image.Content{image.LoaderSystemdBoot: c}, false, true},
		{"none", nil, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var said []string
			b := installBoot(&image.Manifest{Loaders: tc.loaders}, func(f string, a ...any) { said = append(said, f) })
			if b.Skip != tc.skip || b.NoNetboot != tc.nonet {
				t.Errorf("Skip %v NoNetboot %v, want %v %v", b.Skip, b.NoNetboot, tc.skip, tc.nonet)
			}
			if want := btoi(tc.skip) + btoi(tc.nonet); len(said) != want {
				t.Errorf("said %d things, want %d: %q", len(said), want, said)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestInstallDiskResolvesASelectorAtBoot: imprint.install=serial=... names
// a disk by what stays put between boots; the agent finds its kernel name
// in sysfs, and refuses a selector that fits two disks.
func TestInstallDiskResolvesASelectorAtBoot(t *testing.T) {
	root := t.TempDir()
	w := func(p, v string) {
		p = filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, serial := range map[string]string{"vda": "boot-disk", "vdb": "data-disk"} {
		w("sys/block/"+name+"/size", "209715200") // 100 GiB
		w("sys/block/"+name+"/removable", "0")
		w("sys/block/"+name+"/ro", "0")
		w("sys/block/"+name+"/serial", serial)
	}
	w("proc/self/mountinfo", "1 0 0:2 / / rw - rootfs rootfs rw")
	for _, tc := range []struct{ sel, want, wantErr string }{
		{"serial=data-disk", "/dev/vdb", ""},
		{"/dev/disk/by-id/virtio-boot-disk", "/dev/vda", ""}, // no udev: no links
		{"/dev/vdc", "/dev/vdc", ""},
		{"size>=50G", "", "more than one disk matches"},
		{"serial=nope", "", "no disk matches"},
	} {
		var console bytes.Buffer
		a := &Agent{Console: &console, Root: root, Params: Params{Install: tc.sel}}
		got, err := a.installDisk(context.Background())
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "/dev/vda 100.0 GiB") {
				t.Errorf("%s: %q, %v; want an error with %q listing the disks", tc.sel, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %s", tc.sel, got, err, tc.want)
		}
		if got != tc.sel && !strings.Contains(console.String(), "is "+tc.want) {
			t.Errorf("%s: the console does not say which disk: %q", tc.sel, console.String())
		}
	}
}
