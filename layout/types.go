package layout

import (
	"fmt"
	"strings"
)

// Role says who owns a partition's bytes.
type Role string

const (
	// RoleImage partitions are written bit-for-bit from the image.
	RoleImage Role = "image"
	// RoleESP is the EFI System Partition, owned by the bootloader step.
	RoleESP Role = "esp"
	// RoleLocal partitions are created empty for node-local state.
	RoleLocal Role = "local"
	// RoleKeep partitions already exist on the target and survive untouched.
	RoleKeep Role = "keep"
	// RoleBIOSBoot is the small partition GRUB i386-pc puts its core image in.
	RoleBIOSBoot Role = "bios-boot"
)

// Valid reports whether r is a role imprint knows.
func (r Role) Valid() bool {
	switch r {
	case RoleImage, RoleESP, RoleLocal, RoleKeep, RoleBIOSBoot:
		return true
	}
	return false
}

// Well-known partition type GUIDs: the UAPI Discoverable Partitions
// Specification names plus the few firmware ones imprint needs.
var typeNames = map[string]string{
	"esp":                  "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
	"xbootldr":             "BC13C2FF-59E6-4262-A352-B275FD6F7172",
	"swap":                 "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
	"root-x86-64":          "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
	"root-arm64":           "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
	"usr-x86-64":           "8484680C-9521-48C6-9C11-B0720656F69E",
	"usr-arm64":            "B0E01050-EE5F-4390-949A-9101B17104E9",
	"home":                 "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
	"srv":                  "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
	"var":                  "4D21B016-B534-45C2-A9FB-5C16E091FD2D",
	"tmp":                  "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1",
	"linux-generic":        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
	"bios-boot":            "21686148-6449-6E6F-744E-656564454649",
	"microsoft-basic-data": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
	"microsoft-reserved":   "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
}

// Type GUIDs callers compare against.
var (
	TypeESP          = typeNames["esp"]
	TypeSwap         = typeNames["swap"]
	TypeRootX86_64   = typeNames["root-x86-64"]
	TypeLinuxGeneric = typeNames["linux-generic"]
	TypeBIOSBoot     = typeNames["bios-boot"]
)

// TypeGUID resolves a UAPI type name ("root-x86-64") or a literal GUID to the
// canonical upper-case GUID.
func TypeGUID(s string) (string, error) {
	if g, ok := typeNames[strings.ToLower(strings.TrimSpace(s))]; ok {
		return g, nil
	}
	g := strings.ToUpper(strings.TrimSpace(s))
	if !isGUID(g) {
		return "", fmt.Errorf("%w: partition type %q is neither a known name nor a GUID", ErrBadLayout, s)
	}
	return g, nil
}

// TypeName gives the UAPI name of a type GUID, or the GUID itself.
func TypeName(guid string) string {
	g := strings.ToUpper(guid)
	for n, v := range typeNames {
		if v == g {
			return n
		}
	}
	return g
}

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789ABCDEFabcdef", c) {
				return false
			}
		}
	}
	return true
}

// Spec is one partition the layout wants. It is what the manifest records,
// so its JSON form is part of the image format (docs/format.md).
type Spec struct {
	Name string `json:"name"`
	// Type is the partition type GUID, upper case.
	Type string `json:"type"`
	Role Role   `json:"role"`
	// Size in bytes; with Rest it is the minimum.
	Size int64 `json:"size"`
	// Rest makes the partition take what is left of the disk.
	Rest bool `json:"rest,omitempty"`
	// Optional rest partitions are left out when less than Size remains.
	Optional bool `json:"optional,omitempty"`
	// FS is the filesystem made on a local partition: "swap", "ext4" or "".
	FS string `json:"fs,omitempty"`
}

// Layout is the GPT an image wants, in disk order.
type Layout struct {
	Partitions []Spec `json:"partitions"`
}

// Find returns the spec named name.
func (l Layout) Find(name string) (Spec, bool) {
	for _, p := range l.Partitions {
		if p.Name == name {
			return p, true
		}
	}
	return Spec{}, false
}

// Validate checks a layout on its own, before any disk is involved.
func (l Layout) Validate() error {
	if len(l.Partitions) == 0 {
		return fmt.Errorf("%w: no partitions", ErrBadLayout)
	}
	if len(l.Partitions) > 128 {
		return fmt.Errorf("%w: %d partitions, GPT holds 128", ErrBadLayout, len(l.Partitions))
	}
	seen := map[string]bool{}
	rest := 0
	esp := 0
	for i, p := range l.Partitions {
		where := fmt.Sprintf("partition %d (%q)", i+1, p.Name)
		if p.Name == "" {
			return fmt.Errorf("%w: %s has no name", ErrBadLayout, where)
		}
		if len(p.Name) > 36 {
			return fmt.Errorf("%w: %s: name longer than 36 characters", ErrBadLayout, where)
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: %s: name used twice", ErrBadLayout, where)
		}
		seen[p.Name] = true
		if !isGUID(p.Type) {
			return fmt.Errorf("%w: %s: type %q is not a GUID", ErrBadLayout, where, p.Type)
		}
		if !p.Role.Valid() {
			return fmt.Errorf("%w: %s: unknown role %q (want image, esp, local, keep or bios-boot)", ErrBadLayout, where, p.Role)
		}
		if p.Size < 0 || (p.Size == 0 && !p.Rest) {
			return fmt.Errorf("%w: %s: size %d", ErrBadLayout, where, p.Size)
		}
		if p.Size > MaxPartitionSize {
			return fmt.Errorf("%w: %s: size %d is larger than the %s limit", ErrBadLayout, where, p.Size, HumanSize(MaxPartitionSize))
		}
		if p.Rest {
			rest++
			if p.Role == RoleImage {
				return fmt.Errorf("%w: %s: an image partition has the size of its content, not \"rest\"", ErrBadLayout, where)
			}
		}
		switch p.FS {
		case "", "swap", "ext4":
		default:
			return fmt.Errorf("%w: %s: unknown filesystem %q (want swap or ext4)", ErrBadLayout, where, p.FS)
		}
		if p.FS != "" && p.Role != RoleLocal {
			return fmt.Errorf("%w: %s: only local partitions get a filesystem", ErrBadLayout, where)
		}
		if p.Role == RoleESP {
			esp++
		}
	}
	if rest > 1 {
		return fmt.Errorf("%w: %d partitions take the rest; at most one can", ErrBadLayout, rest)
	}
	if esp > 1 {
		return fmt.Errorf("%w: %d ESPs; at most one", ErrBadLayout, esp)
	}
	return nil
}
