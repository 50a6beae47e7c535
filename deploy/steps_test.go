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
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// testImage stores an image with one 8 MiB content partition of random
// bytes (128 chunks of 64 KiB) and no boot files.
func testImage(t *testing.T) (*store.Dir, *image.Resolved) {
	t.Helper()
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 8<<20)
	rand.Read(data)
	c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "unit", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: 64 << 10,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	r, err := store.Resolve(context.Background(), st, "unit", "1")
	if err != nil {
		t.Fatal(err)
	}
	return st, r
}

// smallLayout keeps the unit tests' disks small: a 100 MiB ESP (a size
// FAT32 comes out clean at) and the root.
func smallLayout(t *testing.T, img *image.Resolved, extra ...layout.Spec) layout.Layout {
	t.Helper()
	l := layout.Layout{Partitions: append([]layout.Spec{
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 100 << 20},
		{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage},
	}, extra...)}
	l, err := img.Manifest.FitLayout(l)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func fileSum(t *testing.T, p string) string {
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

func TestPlanOfAFreshFile(t *testing.T) {
	_, img := testImage(t)
	lay := smallLayout(t, img)
	p := filepath.Join(t.TempDir(), "new.img")
	plan, err := MakePlan(nil, img, PlanOptions{Layout: lay, Size: 200 << 20, DiskName: p})
	if err != nil {
		t.Fatal(err)
	}
	root, ok := plan.Table.Find("root")
	if !plan.Create || plan.Resume || plan.Firmware != "both" || !ok || root.Len != 8<<20 {
		t.Fatalf("plan %+v, root %+v", plan, root)
	}
	if _, ok := plan.Table.ByRole(layout.RoleBIOSBoot); !ok {
		t.Fatal("an image file boots on both firmwares, but the plan has no BIOS boot partition")
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("planning created the file")
	}
	// An existing blank file: a fresh plan, nothing to destroy or resume.
	os.WriteFile(p, nil, 0o644)
	os.Truncate(p, 200<<20)
	dev, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	plan, err = MakePlan(dev, img, PlanOptions{Layout: lay, Firmware: "uefi", DiskName: p})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Create || plan.Resume || len(plan.Destroyed) != 0 || plan.DiskSize != 200<<20 {
		t.Fatalf("plan on a blank file: %+v", plan)
	}
	if _, ok := plan.Table.ByRole(layout.RoleBIOSBoot); ok {
		t.Fatal("a uefi plan has a BIOS boot partition")
	}
}

// failingSource gives n chunks, then fails every request: a source lost
// in the middle of a deploy.
type failingSource struct {
	store.Source
	left atomic.Int64
}

func (f *failingSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	if f.left.Add(-1) < 0 {
		return nil, errors.New("the source went away")
	}
	return f.Source.Chunk(ctx, sum)
}

func TestResumeAfterAnInterruptedWriteContents(t *testing.T) {
	st, img := testImage(t)
	lay := smallLayout(t, img)
	p := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(p, nil, 0o644)
	os.Truncate(p, 200<<20)
	ctx := context.Background()

	dev, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := MakePlan(dev, img, PlanOptions{Layout: lay, Firmware: "uefi", DiskName: p})
	if err != nil {
		t.Fatal(err)
	}
	tg := &Target{Dev: dev, Image: img, Plan: plan}
	if err := tg.Partition(ctx); err != nil {
		t.Fatal(err)
	}
	src := &failingSource{Source: st}
	src.left.Store(50)
	cp, err := NewCopier([]store.Source{src}, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp.Workers = 1
	if _, err := tg.WriteContents(ctx, cp, WriteOptions{}); err == nil {
		t.Fatal("a write from a source that went away succeeded")
	}
	cp.Dec.Close()
	dev.Close()

	od := readDisk(t, p)
	if od.State.Status != ondisk.StatusWriting || od.Layout == nil {
		t.Fatalf("the interrupted disk records %+v", od.State)
	}
	marked := od.State.Done["root"].Count()
	if marked == 0 || marked > 50 {
		t.Fatalf("%d chunks marked written after 50 were fetched", marked)
	}

	dev, err = disk.OpenDisk(p, disk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	plan, err = MakePlan(dev, img, PlanOptions{Layout: lay, DiskName: p})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Resume || plan.Firmware != "uefi" {
		t.Fatalf("second plan: resume %v, firmware %q", plan.Resume, plan.Firmware)
	}
	tg = &Target{Dev: dev, Image: img, Plan: plan}
	if err := tg.Partition(ctx); err != nil {
		t.Fatal(err)
	}
	cp, err = NewCopier([]store.Source{st}, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Dec.Close()
	w, err := tg.WriteContents(ctx, cp, WriteOptions{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if w.Skipped != int64(marked)*64<<10 || w.Written != 8<<20-w.Skipped || !w.Verified {
		t.Fatalf("resumed write: %+v, %d chunks were marked", w, marked)
	}
	if err := tg.Commit(w.Verified); err != nil {
		t.Fatal(err)
	}
	rep, err := ondisk.VerifyDisk(ctx, p, nil)
	if err != nil || !rep.Identical || rep.ImageID != img.ID {
		t.Fatalf("verify after the resume: %v %+v", err, rep)
	}
}

func readDisk(t *testing.T, p string) *ondisk.OnDisk {
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
	return od
}

// The layout is the deploy's choice, not the image's: an override shapes
// the disk, the record keeps the image id and the layout used.
func TestDeployWithALayoutOverride(t *testing.T) {
	st, img := testImage(t)
	dir := t.TempDir()
	over := smallLayout(t, img, layout.Spec{Name: "state", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: 16 << 20})
	over.Partitions[1].Size = 24 << 20
	for _, tc := range []struct {
		name  string
		lay   *layout.Layout
		root  int64
		esp   int64
		state int64
	}{
		{"default", nil, 8 << 20, image.DefaultESPSize, image.DefaultStateSize},
		{"override", &over, 24 << 20, 100 << 20, 16 << 20},
	} {
		p := filepath.Join(dir, tc.name+".img")
		_, err := Deploy(context.Background(), Options{Sources: []store.Source{st}, Image: img, Disk: p, Size: 1 << 30,
			Verify: true, Boot: BootOptions{Skip: true}, Layout: tc.lay, Slots: 1})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		od := readDisk(t, p)
		root, _ := od.State.Table.Find("root")
		esp, _ := od.State.Table.ByRole(layout.RoleESP)
		if od.State.ImageID != img.ID || root.Len != tc.root || esp.Len != tc.esp {
			t.Fatalf("%s: id %s, root %d, esp %d", tc.name, od.State.ImageID, root.Len, esp.Len)
		}
		if state, ok := od.State.Table.Find("state"); !ok || state.Len != tc.state || od.Layout == nil || len(od.Layout.Partitions) != len(od.State.Table.Partitions) {
			t.Fatalf("%s: recorded layout %+v, table %+v", tc.name, od.Layout, od.State.Table)
		}
	}
}

func TestALayoutThatDoesNotFitWritesNothing(t *testing.T) {
	st, img := testImage(t)
	dir := t.TempDir()
	big := smallLayout(t, img, layout.Spec{Name: "state", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: 1 << 30})
	deploy := func(p string, size int64, l *layout.Layout) error {
		_, err := Deploy(context.Background(), Options{Sources: []store.Source{st}, Image: img, Disk: p, Size: size, Boot: BootOptions{Skip: true}, Layout: l})
		return err
	}

	p := filepath.Join(dir, "new.img")
	if err := deploy(p, 300<<20, &big); !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("new file: %v", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a deploy that did not fit created the file")
	}

	// An existing disk keeps every byte: first a deployed one, then the
	// same disk again with a layout too big for it.
	p = filepath.Join(dir, "old.img")
	if err := deploy(p, 300<<20, nil); err == nil {
		t.Fatal("the default layout (512 MiB ESP) fit in 300 MiB")
	}
	small := smallLayout(t, img)
	if err := deploy(p, 300<<20, &small); err != nil {
		t.Fatal(err)
	}
	before := fileSum(t, p)
	if err := deploy(p, 0, &big); !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("existing disk: %v", err)
	}
	wrong := small
	wrong.Partitions = append([]layout.Spec(nil), small.Partitions...)
	wrong.Partitions[1].Size = 1 << 20
	if err := deploy(p, 0, &wrong); !errors.Is(err, layout.ErrBadLayout) {
		t.Fatalf("a layout smaller than the content: %v", err)
	}
	if fileSum(t, p) != before {
		t.Fatal("a deploy that did not fit changed the disk")
	}
}

// TestAResumeBootsAsTheInterruptedRunPlanned: the firmware a deploy chose
// is in the journal, and a rerun without --firmware takes it from there,
// not from the table: a layout that carries its own BIOS boot partition,
// deployed for UEFI, must not get GRUB in its MBR when resumed. A rerun
// that asks for a firmware the recorded table cannot boot is planned
// afresh instead of resumed into a failure.
func TestAResumeBootsAsTheInterruptedRunPlanned(t *testing.T) {
	_, img := testImage(t)
	lay := smallLayout(t, img, layout.Spec{Name: "bios", Type: layout.TypeBIOSBoot, Role: layout.RoleBIOSBoot, Size: layout.Align})
	noBIOS := smallLayout(t, img)
	for _, tc := range []struct {
		name         string
		lay          layout.Layout
		first, again string
		wantResume   bool
		want         string
	}{
		{"uefi despite a BIOS boot partition", lay, "uefi", "", true, "uefi"},
		{"both", lay, "both", "", true, "both"},
		{"uefi asked again", noBIOS, "uefi", "uefi", true, "uefi"},
		{"bios asked on a table without BIOS boot", noBIOS, "uefi", "both", false, "both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.img")
			os.WriteFile(p, nil, 0o644)
			os.Truncate(p, 200<<20)
			dev, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			plan, err := MakePlan(dev, img, PlanOptions{Layout: tc.lay, Firmware: tc.first, DiskName: p})
			if err != nil {
				t.Fatal(err)
			}
			tg := &Target{Dev: dev, Image: img, Plan: plan}
			if err := tg.Partition(context.Background()); err != nil {
				t.Fatal(err)
			}
			dev.Close() // the "kill": nothing written past the start record
			if fw := readDisk(t, p).State.Firmware; fw != tc.first {
				t.Fatalf("the journal records firmware %q, want %q", fw, tc.first)
			}
			dev, err = disk.OpenDisk(p, disk.OpenOptions{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			plan, err = MakePlan(dev, img, PlanOptions{Layout: tc.lay, Firmware: tc.again, DiskName: p})
			if err != nil {
				t.Fatal(err)
			}
			if plan.Resume != tc.wantResume || plan.Firmware != tc.want {
				t.Fatalf("rerun: resume %v firmware %q, want %v %q", plan.Resume, plan.Firmware, tc.wantResume, tc.want)
			}
			if _, ok := plan.Table.ByRole(layout.RoleBIOSBoot); tc.want != "uefi" && !ok {
				t.Fatalf("firmware %s planned without a BIOS boot partition", tc.want)
			}
		})
	}
}

// A byte that changes on the device between the writes and the read-back
// fails the deploy (the read-back compares each chunk with what was
// written), and a rerun rewrites that chunk and finishes.
func TestTheReadBackFindsAChunkChangedAfterItsWrite(t *testing.T) {
	st, img := testImage(t)
	dir := t.TempDir()
	opts := func(p string) Options {
		return Options{Sources: []store.Source{st}, Image: img, Disk: p, Size: 1 << 30, Verify: true, Boot: BootOptions{Skip: true}, Slots: 1}
	}
	// Where the root lands: the same plan on another file.
	if _, err := Deploy(context.Background(), opts(filepath.Join(dir, "first.img"))); err != nil {
		t.Fatal(err)
	}
	root, _ := readDisk(t, filepath.Join(dir, "first.img")).State.Table.Find("root")
	at := root.Start + 3*(64<<10) + 5

	p := filepath.Join(dir, "disk.img")
	o := opts(p)
	flipped := false
	o.Events = func(e Event) {
		if e.Kind != "phase" || e.Phase != "verify" || flipped {
			return
		}
		flipped = true
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, at); err != nil {
			t.Error(err)
		}
		b[0] ^= 0x10
		if _, err := f.WriteAt(b, at); err != nil {
			t.Error(err)
		}
		if err := f.Sync(); err != nil {
			t.Error(err)
		}
	}
	_, err := Deploy(context.Background(), o)
	if !flipped {
		t.Fatal("the verify phase never began")
	}
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "partition root") {
		t.Fatalf("a chunk changed after its write: %v, want ErrVerify naming partition root", err)
	}
	if _, err := Deploy(context.Background(), opts(p)); err != nil {
		t.Fatalf("the rerun: %v", err)
	}
	if od := readDisk(t, p); od.State.Status != ondisk.StatusComplete {
		t.Fatalf("after the rerun the disk is %q", od.State.Status)
	}
	byteAt := func(p string) byte {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, at); err != nil {
			t.Fatal(err)
		}
		return b[0]
	}
	if byteAt(p) != byteAt(filepath.Join(dir, "first.img")) {
		t.Fatal("the rerun left the changed byte")
	}
}
