package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

const syncChunk = 64 << 10

// putVersion stores image unit:version with root bytes data, a kernel, an
// initrd and a systemd-boot stand-in, of root type typ.
func putVersion(t *testing.T, st *store.Dir, version string, data []byte, typ string) *image.Resolved {
	t.Helper()
	ctx := context.Background()
	put := func(b []byte) *image.Content {
		c, _, err := image.StoreContent(ctx, st, bytes.NewReader(b), int64(len(b)), syncChunk, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "unit", Version: version, Created: time.Unix(1700000000, 0).UTC(), ChunkSize: syncChunk,
		Partitions: []image.Partition{{Name: "root", Type: typ, Content: put(data)}},
		Boot:       &image.Boot{Kernel: put([]byte("kernel " + version)), Initrd: put([]byte("initrd " + version)), Cmdline: "console=ttyS0"},
		Loaders:    map[string]*image.Content{image.LoaderSystemdBoot: put([]byte("systemd-boot stand-in"))}}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	r, err := store.Resolve(ctx, st, "unit", version)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// changed is data with the chunks at idx replaced by random bytes.
func changed(data []byte, idx ...int) []byte {
	out := bytes.Clone(data)
	for _, i := range idx {
		rand.Read(out[i*syncChunk : (i+1)*syncChunk])
	}
	return out
}

func deploySlots(t *testing.T, st *store.Dir, img *image.Resolved, p string, slots int) {
	t.Helper()
	lay := smallLayout(t, img)
	_, err := Deploy(context.Background(), Options{Sources: []store.Source{st}, Image: img, Disk: p, Size: 400 << 20, Layout: &lay,
		Boot: BootOptions{Firmware: bootloader.UEFI, NoNetboot: true}, Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
}

// outside hashes every 64 KiB sector run of the disk file outside the
// ranges given (start, len), so a test can prove nothing else changed.
func outside(t *testing.T, p string, skip ...layout.Placed) map[int64]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	out := map[int64]string{}
	buf := make([]byte, 64<<10)
	for off := int64(0); off < st.Size(); off += int64(len(buf)) {
		in := false
		for _, s := range skip {
			if off >= s.Start && off < s.Start+s.Len {
				in = true
			}
		}
		if in {
			continue
		}
		n, _ := f.ReadAt(buf, off)
		out[off] = fmt.Sprintf("%x", sha256.Sum256(buf[:n]))
	}
	return out
}

func sameHashes(t *testing.T, what string, a, b map[int64]string) {
	t.Helper()
	for off, h := range a {
		if b[off] != h {
			t.Fatalf("%s: the disk changed at byte %d, outside what it may write", what, off)
		}
	}
}

// A sync writes only the inactive slot and the ESP, takes every chunk
// the disk holds from the disk, fetches the rest, and makes the new
// slot's entry (with a try counter) the default; the next sync writes the
// other slot and leaves in place what is already there.
func TestSyncWritesOnlyTheInactiveSlotAndFetchesOnlyWhatIsMissing(t *testing.T) {
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d1 := randomBytes(8 << 20)
	v1 := putVersion(t, st, "1", d1, layout.TypeRootX86_64)
	d2 := changed(d1, 5)
	v2 := putVersion(t, st, "2", d2, layout.TypeRootX86_64)
	d3 := changed(d2, 7, 100)
	v3 := putVersion(t, st, "3", d3, layout.TypeRootX86_64)
	p := filepath.Join(t.TempDir(), "disk.img")
	deploySlots(t, st, v1, p, 2)
	od := readDisk(t, p)
	if od.Record == nil || od.Record.Active != "a" || len(od.Slots) != 1 {
		t.Fatalf("deploy --slots 2: record %+v", od.Record)
	}
	a, _ := od.State.Table.Find("root-a")
	b, okb := od.State.Table.Find("root-b")
	esp, _ := od.State.Table.ByRole(layout.RoleESP)
	if !okb || a.Len != DefaultSlotSize(8<<20) || b.Len != a.Len || a.Type != layout.TypeRootX86_64 {
		t.Fatalf("slots: a %+v b %+v", a, b)
	}
	before := outside(t, p, b, esp)
	ctx := context.Background()
	res, err := Sync(ctx, SyncOptions{Sources: []store.Source{st}, Image: v2, Disk: p})
	if err != nil {
		t.Fatal(err)
	}
	sameHashes(t, "sync into b", before, outside(t, p, b, esp))
	if res.Plan.Slot != "b" || res.Fetched > syncChunk+4096 || res.Local != 8<<20-syncChunk || res.FetchedStored < syncChunk {
		t.Fatalf("sync v2: %+v %+v", res, res.Plan)
	}
	od = readDisk(t, p)
	if od.Record.Active != "b" || od.State.ImageID != v2.ID || len(od.Slots) != 2 {
		t.Fatalf("after sync: %+v", od.Record)
	}
	menu := readMenu(t, p)
	e, ok := menu.Find("slot-b")
	if !ok || menu.Default != "slot-b" || e.Tries == nil || e.Tries.Left != DefaultTries || !strings.Contains(e.Options, strings.ToLower(b.GUID)) || !strings.Contains(e.Linux, "/2/") {
		t.Fatalf("menu after sync: %+v", menu)
	}
	if _, ok := menu.Find("slot-a"); !ok {
		t.Fatalf("the previous slot's entry is gone: %+v", menu)
	}
	rep, err := ondisk.VerifyDisk(ctx, p, nil)
	if err != nil || !rep.Identical || rep.ImageID != v2.ID {
		t.Fatalf("verify after sync: %v %+v", err, rep)
	}

	// v3 goes into a, which holds v1: the chunks v1 and v3 share in place
	// stay, those v3 shares with v2 come from b, one is fetched.
	before = outside(t, p, a, esp)
	res, err = Sync(ctx, SyncOptions{Sources: []store.Source{st}, Image: v3, Disk: p})
	if err != nil {
		t.Fatal(err)
	}
	sameHashes(t, "sync into a", before, outside(t, p, a, esp))
	if res.Plan.Slot != "a" || res.InPlace != 8<<20-3*syncChunk || res.Local != syncChunk || res.Fetched != 2*syncChunk+int64(len("kernel 3")+len("initrd 3")) {
		t.Fatalf("sync v3: in place %d, local %d, fetched %d", res.InPlace, res.Local, res.Fetched)
	}
	if rep, err := ondisk.VerifyDisk(ctx, p, nil); err != nil || !rep.Identical || rep.ImageID != v3.ID {
		t.Fatalf("verify after the second sync: %v %+v", err, rep)
	}
	// Version 1's boot files went: neither slot holds it.
	dev, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	od, _ = ondisk.ReadDisk(dev)
	if od.ESP.Exists(bootloader.KernelDir("1")+"/vmlinuz") || !od.ESP.Exists(bootloader.KernelDir("2")+"/vmlinuz") {
		t.Fatalf("old kernels not pruned, or the other slot's pruned: %v", res.Pruned)
	}
	// Synced again: nothing to do.
	if res, err = Sync(ctx, SyncOptions{Sources: []store.Source{st}, Image: v3, Disk: p}); err != nil || !res.Plan.UpToDate {
		t.Fatalf("sync to the running version: %v %+v", err, res)
	}
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// Bad input is refused with an error naming it, and nothing is written.
func TestSyncRefusesBadInputAndWritesNothing(t *testing.T) {
	dir := t.TempDir()
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d1 := randomBytes(8 << 20)
	v1 := putVersion(t, st, "1", d1, layout.TypeRootX86_64)
	big := putVersion(t, st, "2", randomBytes(int(DefaultSlotSize(8<<20)+(1<<20))), layout.TypeRootX86_64)
	arm := putVersion(t, st, "3", d1, "B921B045-1DF0-41C3-AF44-4C6F280D3FAE")
	old := putVersion(t, st, "0.9", d1, layout.TypeRootX86_64)
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := image.ParseTrust([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	v4 := putVersion(t, st, "4", changed(d1, 1), layout.TypeRootX86_64)
	two := filepath.Join(dir, "two.img")
	deploySlots(t, st, v1, two, 2)
	one := filepath.Join(dir, "one.img")
	deploySlots(t, st, v1, one, 1)
	for _, tc := range []struct {
		name string
		disk string
		o    SyncOptions
		want error
		says string
	}{
		{"one slot", one, SyncOptions{Image: v4}, ErrOneSlot, "deploy --slots 2"},
		{"root larger than the slot", two, SyncOptions{Image: big}, ErrSlotMismatch, "--slot-size"},
		{"another architecture", two, SyncOptions{Image: arm}, ErrSlotMismatch, "root-arm64"},
		{"downgrade", two, SyncOptions{Image: old}, ErrDowngrade, "newer than unit:0.9"},
		{"unsigned under --trust", two, SyncOptions{Image: v4, Trust: trust}, image.ErrUntrusted, "no signature"},
	} {
		before := fileHash(t, tc.disk)
		tc.o.Disk, tc.o.Sources = tc.disk, []store.Source{st}
		_, err := Sync(context.Background(), tc.o)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if fileHash(t, tc.disk) != before {
			t.Errorf("%s: the disk changed", tc.name)
		}
	}
}

func readMenu(t *testing.T, p string) *bootloader.Menu {
	t.Helper()
	dev, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	od, err := ondisk.ReadDisk(dev)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bootloader.ReadMenu(od.ESP)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// After a rollback (the menu prefers slot a again), a sync keeps the slot
// the menu boots and writes the other, whatever the record said last.
func TestSyncAfterARollbackKeepsTheSlotTheMenuBoots(t *testing.T) {
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d1 := randomBytes(2 << 20)
	v1 := putVersion(t, st, "1", d1, layout.TypeRootX86_64)
	v2 := putVersion(t, st, "2", changed(d1, 1), layout.TypeRootX86_64)
	v3 := putVersion(t, st, "3", changed(d1, 2), layout.TypeRootX86_64)
	p := filepath.Join(t.TempDir(), "disk.img")
	deploySlots(t, st, v1, p, 2)
	ctx := context.Background()
	if _, err := Sync(ctx, SyncOptions{Sources: []store.Source{st}, Image: v2, Disk: p}); err != nil {
		t.Fatal(err)
	}
	dev, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	od, err := ondisk.ReadDisk(dev)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bootloader.ReadMenu(od.ESP)
	if err != nil {
		t.Fatal(err)
	}
	if slot, err := m.Rollback(); err != nil || slot != "a" {
		t.Fatalf("rollback: %q %v", slot, err)
	}
	if err := bootloader.WriteMenu(od.ESP, m); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	esp, _ := od.State.Table.ByRole(layout.RoleESP)
	b, _ := od.State.Table.Find("root-b")
	before := outside(t, p, b, esp)
	res, err := Sync(ctx, SyncOptions{Sources: []store.Source{st}, Image: v3, Disk: p})
	if err != nil || res.Plan.Slot != "b" || res.Plan.Active != "a" {
		t.Fatalf("sync after the rollback: %v %+v", err, res.Plan)
	}
	sameHashes(t, "sync after the rollback", before, outside(t, p, b, esp))
}

// A sync to an older version with AllowDowngrade boots it next: the
// loaders sort slot entries newest version first, so the newer slot is
// marked bad; the older one is on trial, and if it fails, the newer one
// (first by version among bad entries) boots again.
func TestSyncDowngradeBootsTheOlderVersionNext(t *testing.T) {
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d1 := randomBytes(2 << 20)
	v2 := putVersion(t, st, "2", d1, layout.TypeRootX86_64)
	v1 := putVersion(t, st, "1", changed(d1, 1), layout.TypeRootX86_64)
	p := filepath.Join(t.TempDir(), "disk.img")
	deploySlots(t, st, v2, p, 2)
	if _, err := Sync(context.Background(), SyncOptions{Sources: []store.Source{st}, Image: v1, Disk: p, AllowDowngrade: true}); err != nil {
		t.Fatal(err)
	}
	m := readMenu(t, p)
	order := m.SlotOrder()
	if len(order) != 2 || order[0].Slot != "b" || order[0].Version != "1" {
		t.Fatalf("slot order after the downgrade: %+v, want slot b (version 1) first", order)
	}
	// Its tries run out: every slot entry is bad, the newest sorts first.
	if err := m.MarkBad(order[0].ID); err != nil {
		t.Fatal(err)
	}
	if o := m.SlotOrder(); o[0].Slot != "a" {
		t.Errorf("after the older version failed: %s boots, want slot a (version 2)", o[0].ID)
	}
}
