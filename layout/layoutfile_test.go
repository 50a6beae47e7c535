package layout

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	// uefiESP is the ESP type GUID as sgdisk and sfdisk write it.
	uefiESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
)

func TestParseLayoutHand(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Spec
	}{
		{
			name: "brief example",
			in: `# a compute node, not a dump: label: gpt, sda1 : start=2048
esp      esp          512M   esp
root     root-x86-64  auto   image   # from the image
swap     swap         1G     local  swap

scratch  linux-generic rest  local  ext4
`,
			want: []Spec{
				{Name: "esp", Type: TypeESP, Role: RoleESP, Size: 512 * mib},
				{Name: "root", Type: TypeRootX86_64, Role: RoleImage, Size: 0},
				{Name: "swap", Type: TypeSwap, Role: RoleLocal, Size: gib, FS: "swap"},
				{Name: "scratch", Type: TypeLinuxGeneric, Role: RoleLocal, Size: mib, Rest: true, FS: "ext4"},
			},
		},
		{
			name: "default layout",
			in:   "esp esp 512M esp\nroot root-x86-64 auto image\nscratch linux-generic rest:64M local ext4 optional\n",
			want: []Spec{
				{Name: "esp", Type: TypeESP, Role: RoleESP, Size: 512 * mib},
				{Name: "root", Type: TypeRootX86_64, Role: RoleImage},
				{Name: "scratch", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 64 * mib, Rest: true, Optional: true, FS: "ext4"},
			},
		},
		{
			name: "units, GUID type, keep and bios-boot, fixed image size",
			in: "bios  bios-boot  1MiB  bios-boot\n" +
				"win   EBD0A0A2-B9E5-4433-87C0-68B6B72699C7  100GiB  KEEP\n" +
				"root  ROOT-X86-64  8G  image\n" +
				"a  linux-generic  4096  local\n" +
				"b  linux-generic  2k  local\n" +
				"c  linux-generic  1T  local\n" +
				"d  linux-generic  3KiB  local\n" +
				"e  linux-generic  rest:1GiB  local  optional  ext4\n",
			want: []Spec{
				{Name: "bios", Type: TypeBIOSBoot, Role: RoleBIOSBoot, Size: mib},
				{Name: "win", Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", Role: RoleKeep, Size: 100 * gib},
				{Name: "root", Type: TypeRootX86_64, Role: RoleImage, Size: 8 * gib},
				{Name: "a", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 4096},
				{Name: "b", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 2048},
				{Name: "c", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 1 << 40},
				{Name: "d", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 3072},
				{Name: "e", Type: TypeLinuxGeneric, Role: RoleLocal, Size: gib, Rest: true, Optional: true, FS: "ext4"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseLayout(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l.Partitions, tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", l.Partitions, tc.want)
			}
		})
	}
}

func TestParseLayoutErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // substring of the message, after "bad layout: "
	}{
		{"unknown type", "esp esp 512M esp\nroot root-x86-65 auto image\n", `line 2: type "root-x86-65"`},
		{"bad size suffix", "a linux-generic 1M local\n\nb linux-generic 12Q local\n", `line 3: size "12Q": unknown unit`},
		{"size not a number", "a linux-generic big local\n", `line 1: size "big"`},
		{"size zero", "a linux-generic 0 local\n", `line 1: size "0": must be more than zero`},
		{"size not sectors", "a linux-generic 1000 local\n", `line 1: size "1000": 1000 bytes is not a multiple of 512`},
		{"size overflow", "a linux-generic 99999999999T local\n", `line 1: size "99999999999T": too large`},
		{"decimal unit", "a linux-generic 1GB local\n", `line 1: size "1GB": ambiguous unit`},
		{"bad rest minimum", "a linux-generic rest:lots local\n", `line 1: size "rest:lots": minimum`},
		{"auto on local", "a linux-generic auto local\n", `line 1: size "auto": "auto"`},
		{"rest on image", "root root-x86-64 rest image\n", `line 1: size "rest": an image partition`},
		{"bad role", "esp esp 512M esp\nroot root-x86-64 auto system\n", `line 2: role "system"`},
		{"two rest", "a linux-generic rest local\n# gap\nb linux-generic rest:2M local\n", `line 3: size "rest:2M": a second partition taking the rest of the disk (line 1`},
		{"fs on image", "root root-x86-64 auto image ext4\n", `line 1: filesystem "ext4": only local partitions`},
		{"fs on esp", "esp esp 512M esp swap\n", `line 1: filesystem "swap": only local partitions`},
		{"two fs", "a linux-generic 1M local swap ext4\n", `line 1: filesystem "ext4"`},
		{"unknown fs", "a linux-generic 1M local xfs\n", `line 1: word "xfs"`},
		{"optional on fixed size", "a linux-generic 1M local optional\n", `line 1: word "optional": only a "rest" partition`},
		{"too few columns", "esp esp 512M esp\nroot root-x86-64 auto\n", `line 2: "root root-x86-64 auto": want NAME TYPE SIZE ROLE`},
		{"too many columns", "a linux-generic rest local ext4 optional more\n", `line 1: word "more": too many columns`},
		{"duplicate names", "a linux-generic 1M local\nb linux-generic 1M local\na linux-generic 1M local\n", `line 3: name "a": already used on line 1`},
		{"bad name", "my/root root-x86-64 auto image\n", `line 1: name "my/root": character '/'`},
		{"long name", strings.Repeat("n", 37) + " linux-generic 1M local\n", `line 1: name "nnnn`},
		{"two ESPs", "a esp 512M esp\nb esp 512M esp\n", `line 2: role "esp": a second ESP (line 1`},
		{"empty", "# nothing\n\n", `no partitions`},
		{"binary", "esp\x00esp", `binary data`},
		{"dos label", "label: dos\nlabel-id: 0x1234\ndevice: /dev/sda\nunit: sectors\n\n/dev/sda1 : start=2048, size=2048, type=83\n", `line 1: label "dos": only GPT`},
		{"mbr types without label", "/dev/sda1 : start=2048, size=2048, type=83, bootable\n", `line 1: type "83": not a GPT type GUID`},
		{"sfdisk bad unit", "label: gpt\nunit: bytes\n", `line 2: unit "bytes"`},
		{"sfdisk bad sector size", "label: gpt\nsector-size: 1000\n", `line 2: sector-size "1000"`},
		{"sfdisk bad size", "label: gpt\n\nx1 : start=2048, size=12Q, type=" + TypeLinuxGeneric + "\n", `line 3: size "12Q"`},
		{"sfdisk no size", "label: gpt\n\nx1 : start=2048, type=" + TypeLinuxGeneric + "\n", `line 3: partition "x1": no size=`},
		{"sfdisk no type", "label: gpt\n\nx1 : start=2048, size=2048\n", `line 3: partition "x1": no type=`},
		{"sfdisk unknown type", "label: gpt\n\nx1 : start=2048, size=2048, type=ZZZ\n", `line 3: type "ZZZ"`},
		{"sfdisk unterminated quote", "label: gpt\n\nx1 : start=2048, size=2048, type=" + TypeLinuxGeneric + `, name="oops` + "\n", `line 3: partition "x1": name: unterminated quote`},
		{"sfdisk garbage line", "label: gpt\n\nthis is not a dump\n", `line 3: line "this is not a dump"`},
		{"sfdisk header after partitions", "label: gpt\nx1 : start=2048, size=2048, type=" + TypeLinuxGeneric + "\nunit: sectors\n", `line 3: header "unit": header line after`},
		{"sfdisk two ESPs", "label: gpt\nx1 : start=2048, size=204800, type=" + uefiESP + "\nx2 : start=206848, size=204800, type=" + uefiESP + "\n", `line 3: role "esp": a second ESP (line 2`},
		{"sfdisk no partitions", "label: gpt\nunit: sectors\n", `no partitions`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLayout(strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			t.Log(err)
			if !errors.Is(err, ErrBadLayout) {
				t.Errorf("%v does not wrap ErrBadLayout", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "bad layout: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q\nwant it to contain %q", msg, tc.want)
			}
		})
	}
}

func TestParseLayoutTooLarge(t *testing.T) {
	big := strings.Repeat("# padding\n", maxLayoutFile/10+1)
	if _, err := ParseLayout(strings.NewReader(big)); !errors.Is(err, ErrBadLayout) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v, want a too-large error", err)
	}
}

func TestParseLayoutSfdisk(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Spec
	}{
		{
			name: "typical GPT dump",
			in: `label: gpt
label-id: E950BBE1-7076-4549-B6F8-38609C5A037F
device: /dev/sda
unit: sectors
first-lba: 34
last-lba: 131038
sector-size: 512

/dev/sda1 : start=        2048, size=     1048576, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6DB3C338-9BC9-4DB9-B3CB-B1C8B241B70A, name="EFI System"
/dev/sda2 : start=     1050624, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=5EF777CE-CD64-4EC0-B103-4B2FC23602CC, name="BIOS boot partition"
/dev/sda3 : start=     1052672, size=     8388608, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=DB4ABBE5-EFDB-4233-B9B4-36BAA7FB94C6, name="Root", attrs="GUID:59"
/dev/sda4 : start=     9441280, size=     2097152, type=0657fd6d-a4ab-43c4-84e5-0933c84b4f4f, uuid=DB4ABBE5-EFDB-4233-B9B4-36BAA7FB94C7
/dev/sda5 : start=    11538432, size=     4194304, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=DB4ABBE5-EFDB-4233-B9B4-36BAA7FB94C8, name="my data!"
`,
			want: []Spec{
				{Name: "efi-system", Type: uefiESP, Role: RoleESP, Size: 512 * mib},
				{Name: "bios-boot-partition", Type: TypeBIOSBoot, Role: RoleBIOSBoot, Size: mib},
				{Name: "root", Type: TypeRootX86_64, Role: RoleImage, Size: 0},
				{Name: "part4", Type: TypeSwap, Role: RoleLocal, Size: gib, FS: "swap"},
				{Name: "my-data", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 2 * gib, Rest: true, FS: "ext4"},
			},
		},
		{
			name: "4Kn, attrs reordered, table order differs from disk order, duplicate names, escapes",
			in: `label: gpt
sector-size: 4096
unit: sectors

nvme0n1p2 : name="data", type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, size=262144, start=262400
nvme0n1p1 : uuid=6DB3C338-9BC9-4DB9-B3CB-B1C8B241B70A, start=256, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, size=262144, name="Data"
nvme0n1p3 : start=524544,size=1024,type=8484680C-9521-48C6-9C11-B0720656F69E,name="we\x22ird, \x24name"
nvme0n1p7 : start=525568, size=1024, type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, name="   "
`,
			want: []Spec{
				{Name: "data", Type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", Role: RoleLocal, Size: gib, FS: "ext4"},
				{Name: "data2", Type: TypeLinuxGeneric, Role: RoleLocal, Size: gib, FS: "ext4"},
				{Name: "we-ird---name", Type: "8484680C-9521-48C6-9C11-B0720656F69E", Role: RoleImage},
				// Root verity is image content; being last does not make it "rest".
				{Name: "part7", Type: "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5", Role: RoleImage},
			},
		},
		{
			name: "no header, last partition not local",
			in: "x1 : start=2048, size=2048, type=" + TypeSwap + "\n" +
				"x2 : start=4096, size=204800, type=" + uefiESP + "\n",
			want: []Spec{
				{Name: "part1", Type: TypeSwap, Role: RoleLocal, Size: mib, FS: "swap"},
				{Name: "part2", Type: uefiESP, Role: RoleESP, Size: 100 * mib},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseLayout(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l.Partitions, tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", l.Partitions, tc.want)
			}
		})
	}
}

func TestSanitizeAndUniqueName(t *testing.T) {
	used := map[string]bool{}
	long := strings.Repeat("x", 40)
	for _, c := range []struct {
		in   string
		num  int
		want string
	}{
		{"EFI System", 1, "efi-system"},
		{"efi system", 2, "efi-system2"},
		{"", 3, "part3"},
		{"..", 4, "part4"},
		{"Ünïcode", 5, "n-code"},
		{long, 6, strings.Repeat("x", 36)},
		{long, 7, strings.Repeat("x", 35) + "2"},
	} {
		got := uniqueName(SanitizeName(c.in, c.num), used)
		used[got] = true
		if got != c.want {
			t.Errorf("name %q -> %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFormatLayoutRoundTrip(t *testing.T) {
	layouts := []string{
		"esp esp 512M esp\nroot root-x86-64 auto image\nscratch linux-generic rest:64M local ext4 optional\n",
		"bios bios-boot 1M bios-boot\nesp esp 512M esp\nwin microsoft-basic-data 100G keep\n" +
			"root root-x86-64 8G image\nodd 0FC63DAF-8483-4772-8E79-3D69D8477DE5 1536 local\n" +
			"swap swap 3K local swap\nvar var rest local ext4\n",
	}
	for _, in := range layouts {
		l, err := ParseLayout(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		text := FormatLayout(l)
		back, err := ParseLayout(strings.NewReader(text))
		if err != nil {
			t.Fatalf("re-parsing\n%s: %v", text, err)
		}
		if !reflect.DeepEqual(l, back) {
			t.Errorf("round trip changed the layout\n%s\nfirst  %+v\nsecond %+v", text, l, back)
		}
	}
	// The words FormatLayout picks, checked once so the docs stay true.
	l, _ := ParseLayout(strings.NewReader(layouts[1]))
	text := FormatLayout(l)
	for _, w := range []string{"1536 ", "3K ", "100G ", " rest ", "microsoft-basic-data", "0FC63DAF-8483-4772-8E79-3D69D8477DE5"} {
		if !strings.Contains(text, w) {
			t.Errorf("formatted layout lacks %q:\n%s", w, text)
		}
	}
}

// TestParseLayoutSfdiskReal parses what the real tools write, so a change in
// sfdisk's dump format shows up here.
func TestParseLayoutSfdiskReal(t *testing.T) {
	sgdisk := testenv.Tool(t, "sgdisk")
	sfdisk := testenv.Tool(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 2*gib); err != nil {
		t.Fatal(err)
	}
	// No -q: gdisk 1.0.9 silently writes nothing with it.
	cmd := exec.Command(sgdisk,
		"-n1:0:+512M", "-t1:ef00", "-c1:EFI System",
		"-n2:0:+1M", "-t2:ef02",
		"-n3:0:+1G", "-t3:8304", "-c3:root",
		"-n4:0:+64M", "-t4:8200", "-c4:swap",
		"-n5:0:0", "-t5:8300", "-c5:Scratch Space",
		img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	out, err := exec.Command(sfdisk, "--dump", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v", err)
	}
	l, err := ParseLayout(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []struct {
		name string
		role Role
		fs   string
		rest bool
	}{
		{"efi-system", RoleESP, "", false},
		{"part2", RoleBIOSBoot, "", false},
		{"root", RoleImage, "", false},
		{"swap", RoleLocal, "swap", false},
		{"scratch-space", RoleLocal, "ext4", true},
	}
	if len(l.Partitions) != len(want) {
		t.Fatalf("got %d partitions, want %d:\n%s", len(l.Partitions), len(want), out)
	}
	for i, w := range want {
		p := l.Partitions[i]
		if p.Name != w.name || p.Role != w.role || p.FS != w.fs || p.Rest != w.rest {
			t.Errorf("partition %d = %+v, want %+v", i+1, p, w)
		}
	}
	if p := l.Partitions[0]; p.Size != 512*mib || !isESPType(p.Type) {
		t.Errorf("ESP = %+v", p)
	}
	if p := l.Partitions[2]; p.Size != 0 || p.Type != TypeRootX86_64 {
		t.Errorf("root = %+v, want auto size and type root-x86-64", p)
	}
	if p := l.Partitions[4]; p.Size <= 0 || p.Size%512 != 0 {
		t.Errorf("scratch minimum = %d", p.Size)
	}
	// What the dump gives must be usable as a hand-written layout too.
	if _, err := ParseLayout(strings.NewReader(FormatLayout(l))); err != nil {
		t.Errorf("formatted dump does not parse: %v\n%s", err, FormatLayout(l))
	}
}

// TestLayoutDocExamples parses every untagged code block in docs/layout.md,
// so the examples there stay valid layouts.
func TestLayoutDocExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "layout.md"))
	if err != nil {
		t.Fatalf("docs/layout.md is part of the repository: %v", err)
	}
	var blocks []string
	var cur []string
	in := false
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case !in && line == "```":
			in, cur = true, nil
		case !in && strings.HasPrefix(line, "```"):
			in, cur = true, []string{"skip"}
		case in && line == "```":
			in = false
			if len(cur) == 0 || cur[0] != "skip" {
				blocks = append(blocks, strings.Join(cur, "\n"))
			}
		case in:
			cur = append(cur, line)
		}
	}
	if len(blocks) < 4 {
		t.Fatalf("found %d layout examples in docs/layout.md, want at least 4", len(blocks))
	}
	for i, b := range blocks {
		if _, err := ParseLayout(strings.NewReader(b)); err != nil {
			t.Errorf("example %d: %v\n%s", i+1, err, b)
		}
	}
	// The default layout the docs show is the one the brief and the builder use.
	want := []Spec{
		{Name: "esp", Type: TypeESP, Role: RoleESP, Size: 512 * mib},
		{Name: "root", Type: TypeRootX86_64, Role: RoleImage},
		{Name: "state", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 256 * mib, FS: "ext4"},
		{Name: "scratch", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 64 * mib, Rest: true, Optional: true, FS: "ext4"},
	}
	found := false
	for _, b := range blocks {
		if l, err := ParseLayout(strings.NewReader(b)); err == nil && reflect.DeepEqual(l.Partitions, want) {
			found = true
		}
	}
	if !found {
		t.Error("docs/layout.md does not show the default layout")
	}
}

func TestParseLayoutReadsJSON(t *testing.T) {
	l, err := ParseLayout(strings.NewReader(`{"partitions": [
		{"name": "esp", "type": "esp", "role": "esp", "size": 268435456},
		{"name": "root", "type": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "role": "image", "size": 0},
		{"name": "scratch", "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "role": "local", "size": 1048576, "rest": true, "fs": "ext4"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.Partitions[0].Type != TypeESP || l.Partitions[1].Size != 0 || !l.Partitions[2].Rest {
		t.Fatalf("%+v", l)
	}
	b, _ := MarshalJSON(l)
	if l2, err := ParseJSON(b); err != nil || len(l2.Partitions) != 3 {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{`{"partitions": [{"name": "esp", "type": "esp", "role": "esp", "size": 1, "colour": "red"}]}`, `{"partitions": []}`, `{"partitions": [{"name": "x", "type": "esp", "role": "boot", "size": 1}]}`} {
		if _, err := ParseLayout(strings.NewReader(bad)); !errors.Is(err, ErrBadLayout) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
