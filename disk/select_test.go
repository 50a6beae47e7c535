package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	gib = int64(1) << 30
	tib = int64(1) << 40
)

type fakeDisk struct {
	name, dev       string
	size            int64
	model, serial   string
	wwid, vpdSerial string
	removable, ro   bool
	parts           map[string]string // name -> dev
	slaves          []string
	dmName          string
}

// fakeTree writes sys/block, dev/disk links and proc/self/mountinfo under
// a temporary root. rootMount is the mountinfo line for "/".
func fakeTree(t *testing.T, disks []fakeDisk, links map[string]string, rootMount string) string {
	t.Helper()
	root := t.TempDir()
	w := func(p, v string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range disks {
		b := "sys/block/" + d.name + "/"
		w(b+"dev", d.dev)
		w(b+"size", fmt.Sprint(d.size/512))
		w(b+"removable", map[bool]string{true: "1", false: "0"}[d.removable])
		w(b+"ro", map[bool]string{true: "1", false: "0"}[d.ro])
		if d.model != "" {
			w(b+"device/model", d.model)
		}
		if d.serial != "" {
			if strings.HasPrefix(d.name, "vd") {
				w(b+"serial", d.serial)
			} else {
				w(b+"device/serial", d.serial)
			}
		}
		if d.vpdSerial != "" {
			page := append([]byte{0, 0x80, 0, byte(len(d.vpdSerial))}, d.vpdSerial...)
			w(b+"device/vpd_pg80", string(page))
		}
		if d.wwid != "" {
			w(b+"wwid", d.wwid)
		}
		for p, dev := range d.parts {
			w(b+p+"/dev", dev)
			w(b+p+"/partition", "1")
		}
		for _, s := range d.slaves {
			w(b+"slaves/"+s+"/.keep", "")
		}
		if d.dmName != "" {
			w(b+"dm/name", d.dmName)
		}
	}
	for link, target := range links {
		p := filepath.Join(root, link)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	w("proc/self/mountinfo", "1 0 0:20 / /proc rw - proc proc rw\n"+rootMount)
	w("proc/swaps", "Filename Type Size Used Priority")
	return root
}

// machine is a server with every kind of disk Select must tell apart. The
// disks terms must never pick are the largest, so "largest" proves each
// exclusion.
var machine = []fakeDisk{
	{name: "sda", dev: "8:0", size: 500 * gib, model: "Samsung SSD 860", vpdSerial: "S3Z1NB0K", parts: map[string]string{"sda1": "8:1"}},
	{name: "sdb", dev: "8:16", size: 1 * tib, model: "WDC WD10EZEX", vpdSerial: "WD-WCC6Y1", wwid: "naa.50014ee2b5c4e2a1"},
	{name: "sdf", dev: "8:80", size: 500 * gib, model: "ST500DM002", vpdSerial: "Z6E0TIE"},
	{name: "nvme0n1", dev: "259:0", size: 2 * tib, model: "Samsung SSD 970 EVO Plus 2TB", serial: "S4J4NX0R", wwid: "eui.0025385b91b0a1c2"},
	{name: "vda", dev: "252:0", size: 100 * gib, serial: "virt-disk-1"},
	{name: "sdc", dev: "8:32", size: 8 * tib, model: "Ultra USB 3.0", vpdSerial: "USB4C530", removable: true},
	{name: "sdd", dev: "8:48", size: 5 * tib, model: "Write Protected", vpdSerial: "RO123", ro: true},
	{name: "sde", dev: "8:64", size: 3 * tib, model: "Micron 5300", vpdSerial: "ROOTDISK1", parts: map[string]string{"sde1": "8:65", "sde2": "8:66"}},
	{name: "dm-0", dev: "253:0", size: 3 * tib, slaves: []string{"sde2"}, dmName: "vg-root"},
	{name: "loop0", dev: "7:0", size: 4 * tib},
	{name: "zram0", dev: "251:0", size: 6 * tib},
	{name: "md127", dev: "9:127", size: 7 * tib},
	{name: "sr0", dev: "11:0", size: 0, model: "DVD-RAM", removable: true},
}

var machineLinks = map[string]string{
	"dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K":       "../../sda",
	"dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K-part1": "../../sda1",
	"dev/disk/by-id/ata-Micron_5300_ROOTDISK1":                    "../../sde",
	"dev/disk/by-path/pci-0000:00:1f.2-ata-1":                     "../../sda",
}

const rootOnLVM = "22 1 253:0 / / rw,relatime - ext4 /dev/mapper/vg-root rw\n"

func TestSelect(t *testing.T) {
	root := fakeTree(t, machine, machineLinks, rootOnLVM)
	for _, tc := range []struct {
		sel     string
		loop    bool
		want    string
		wantErr error
		errHas  []string // substrings of the error
	}{
		// Paths.
		{sel: "/dev/sda", want: "/dev/sda"},
		{sel: "/dev/sde", want: "/dev/sde"}, // the root disk, named exactly
		{sel: "disk.img", want: "disk.img"},
		{sel: "/srv/images/node.img", want: "/srv/images/node.img"},
		{sel: "/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K", want: "/dev/sda"},
		{sel: "/dev/disk/by-path/pci-0000:00:1f.2-ata-1", want: "/dev/sda"},
		{sel: "/dev/disk/by-id/ata-Micron_5300_ROOTDISK1", want: "/dev/sde"},
		{sel: "/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K-part1", wantErr: ErrNoDiskMatch, errHas: []string{"sda1", "not a whole disk"}},
		// by-id names without a link (no udev): derived from sysfs.
		{sel: "/dev/disk/by-id/virtio-virt-disk-1", want: "/dev/vda"},
		{sel: "/dev/disk/by-id/nvme-eui.0025385b91b0a1c2", want: "/dev/nvme0n1"},
		{sel: "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_2TB_S4J4NX0R", want: "/dev/nvme0n1"},
		{sel: "/dev/disk/by-id/wwn-0x50014ee2b5c4e2a1", want: "/dev/sdb"},
		{sel: "/dev/disk/by-id/ata-WDC_WD10EZEX-00BN5A0_WD-WCC6Y1", want: "/dev/sdb"},
		{sel: "/dev/disk/by-id/ata-Nothing_Like_It_X1", wantErr: ErrNoDiskMatch, errHas: []string{"no such link", "/dev/sdb 1.0 TiB"}},
		{sel: "/dev/disk/by-path/pci-0000:00:17.0-ata-3", wantErr: ErrNoDiskMatch, errHas: []string{"serial="}},
		// serial= and model=.
		{sel: "serial=S3Z1NB0K", want: "/dev/sda"},
		{sel: "serial=s3z1nb0k", want: "/dev/sda"},
		{sel: "serial=S4J4*", want: "/dev/nvme0n1"},
		{sel: "serial=virt-disk-1", want: "/dev/vda"},
		{sel: "model=Samsung_SSD_970_EVO_Plus_2TB", want: "/dev/nvme0n1"},
		{sel: "model=samsung*", wantErr: ErrAmbiguousDisk, errHas: []string{"/dev/sda 500.0 GiB model=samsung_ssd_860 serial=s3z1nb0k", "/dev/nvme0n1 2.0 TiB", "serial=s4j4nx0r"}},
		{sel: "model=Samsung*,size>=1T", want: "/dev/nvme0n1"},
		// size.
		{sel: "size>=1T,size<=1T", want: "/dev/sdb"},
		{sel: "size=1T", want: "/dev/sdb"},
		{sel: "size<200G", want: "/dev/vda"},
		{sel: "size>=500G", wantErr: ErrAmbiguousDisk, errHas: []string{"/dev/sda", "/dev/sdb", "/dev/sdf", "/dev/nvme0n1"}},
		{sel: "size>2T", wantErr: ErrNoDiskMatch},
		// largest: never a removable, read-only, loop, zram, md or root disk,
		// though each of them is larger.
		{sel: "largest", want: "/dev/nvme0n1"},
		{sel: "largest,size<=1T", want: "/dev/sdb"},
		{sel: "largest,size<=500G", wantErr: ErrAmbiguousDisk, errHas: []string{"/dev/sda", "/dev/sdf"}},
		// Excluded disks, and why, in the error.
		{sel: "serial=USB4C530", wantErr: ErrNoDiskMatch, errHas: []string{"/dev/sdc 8.0 TiB model=ultra_usb_3.0 serial=usb4c530 [not taken: removable]"}},
		{sel: "serial=ROOTDISK1", wantErr: ErrNoDiskMatch, errHas: []string{"/dev/sde 3.0 TiB", "[not taken: holds the running root]"}},
		{sel: "serial=RO123", wantErr: ErrNoDiskMatch, errHas: []string{"[not taken: read-only]"}},
		{sel: "serial=NOPE", wantErr: ErrNoDiskMatch, errHas: []string{`"serial=NOPE"`, "/dev/sda 500.0 GiB", "/dev/loop0 4.0 TiB [not taken: a loop device]", "/dev/md127 7.0 TiB [not taken: a md device]"}},
		{sel: "size>=4T,size<=4T", wantErr: ErrNoDiskMatch, errHas: []string{"a loop device"}},
		{sel: "size>=4T,size<=4T", loop: true, want: "/dev/loop0"},
		// Bad selectors.
		{sel: "serial=", wantErr: ErrBadSelector, errHas: []string{"no value"}},
		{sel: "size>=lots", wantErr: ErrBadSelector, errHas: []string{`"size>=lots"`}},
		{sel: "size>=2T,size<=1T", wantErr: ErrBadSelector, errHas: []string{"at least 2.0 TiB and at most 1.0 TiB"}},
		{sel: "serial=a,,size>=1G", wantErr: ErrBadSelector, errHas: []string{"empty"}},
		{sel: "largest,colour=red", wantErr: ErrBadSelector, errHas: []string{`"colour=red"`}},
		{sel: "serail=S3Z1NB0K", wantErr: ErrBadSelector, errHas: []string{`"serail=S3Z1NB0K" is not a term`}},
		{sel: "", wantErr: ErrBadSelector},
	} {
		name := tc.sel
		if tc.loop {
			name += " with loops"
		}
		t.Run(name, func(t *testing.T) {
			got, err := SelectWith(root, tc.sel, SelectOptions{Loop: tc.loop})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %q, %v; want error %v", got, err, tc.wantErr)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestSelectExcludesTheRunningRootDisk(t *testing.T) {
	disks := []fakeDisk{
		{name: "sda", dev: "8:0", size: 2 * tib, vpdSerial: "A", parts: map[string]string{"sda1": "8:1", "sda2": "8:2"}},
		{name: "sdb", dev: "8:16", size: 1 * tib, vpdSerial: "B"},
		{name: "dm-1", dev: "253:1", size: 2 * tib, slaves: []string{"sda2"}, dmName: "cryptroot"},
	}
	for _, tc := range []struct{ name, mount, want string }{
		{"a partition", "22 1 8:2 / / rw - ext4 /dev/sda2 rw\n", "/dev/sdb"},
		{"device-mapper by number", "22 1 253:1 / / rw - ext4 /dev/mapper/cryptroot rw\n", "/dev/sdb"},
		{"btrfs by source name", "22 1 0:31 /@ / rw - btrfs /dev/sda2 rw\n", "/dev/sdb"},
		{"btrfs on device-mapper", "22 1 0:31 /@ / rw - btrfs /dev/mapper/cryptroot rw\n", "/dev/sdb"},
		{"an initramfs", "22 1 0:2 / / rw - rootfs rootfs rw\n", "/dev/sda"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeTree(t, disks, nil, tc.mount)
			got, err := Select(root, "largest")
			if err != nil || got != tc.want {
				t.Fatalf("largest with root on %s: %q, %v; want %s", tc.name, got, err, tc.want)
			}
		})
	}
}

func TestSelectRemovableExcludedUnlessNamed(t *testing.T) {
	disks := []fakeDisk{
		{name: "sda", dev: "8:0", size: 64 * gib, vpdSerial: "STICK", removable: true},
	}
	root := fakeTree(t, disks, map[string]string{"dev/disk/by-id/usb-Stick_STICK-0:0": "../../sda"}, "22 1 0:2 / / rw - rootfs rootfs rw\n")
	if _, err := Select(root, "largest"); !errors.Is(err, ErrNoDiskMatch) || !strings.Contains(err.Error(), "removable") {
		t.Errorf("largest over a lone USB stick: %v, want ErrNoDiskMatch naming it removable", err)
	}
	if got, err := Select(root, "/dev/disk/by-id/usb-Stick_STICK-0:0"); err != nil || got != "/dev/sda" {
		t.Errorf("the stick by its by-id link: %q, %v", got, err)
	}
}

func TestCheckSelector(t *testing.T) {
	for _, tc := range []struct {
		sel string
		ok  bool
	}{
		{"/dev/sda", true},
		{"/dev/disk/by-id/nvme-eui.0025385b91b0a1c2", true},
		{"largest", true},
		{"serial=S3Z1NB0K,size>=400G", true},
		{"model=Samsung_SSD_860", true},
		{"model=Samsung SSD 860", false}, // a space ends the kernel argument
		{`model="Samsung"`, false},
		{"serial=${serial}", false},
		{"/dev/disk/by-path/pci-0000:00:1f.2-ata-1", true},
		{"sda", false},
		{"size>=big", false},
		{"", false},
	} {
		err := CheckSelector(tc.sel)
		if (err == nil) != tc.ok {
			t.Errorf("CheckSelector(%q) = %v, want ok=%v", tc.sel, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadSelector) {
			t.Errorf("CheckSelector(%q) = %v, not ErrBadSelector", tc.sel, err)
		}
	}
}
