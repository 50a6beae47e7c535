package bootloader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// GlobalVariable is the vendor GUID of Boot####, BootOrder and BootNext.
const GlobalVariable = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// DefaultEfivars is where Linux mounts efivarfs.
const DefaultEfivars = "/sys/firmware/efi/efivars"

// ErrNoEFI says the running system was not booted through UEFI.
var ErrNoEFI = errors.New("no EFI variables (not booted through UEFI, or efivarfs not mounted)")

const (
	attrNV      = 0x1
	attrBS      = 0x2
	attrRT      = 0x4
	loadActive  = 0x1
	varAttrsNBR = attrNV | attrBS | attrRT
	// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h (not in x/sys).
	fsImmutableFL = 0x10
)

// Efivars reads and writes UEFI variables through efivarfs.
type Efivars struct {
	Dir string // DefaultEfivars, or a directory standing in for it in tests
}

func (e Efivars) path(name string) string {
	return filepath.Join(e.Dir, name+"-"+GlobalVariable)
}

// Read returns a global variable's attributes and data.
func (e Efivars) Read(name string) (uint32, []byte, error) {
	b, err := os.ReadFile(e.path(name))
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 4 {
		return 0, nil, fmt.Errorf("EFI variable %s: %d bytes", name, len(b))
	}
	return binary.LittleEndian.Uint32(b), b[4:], nil
}

// Write sets a global variable (non-volatile, boot and runtime access).
// efivarfs marks most variables immutable; the flag is cleared first, as
// efibootmgr does.
func (e Efivars) Write(name string, data []byte) error {
	if st, err := os.Stat(e.Dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: %s", ErrNoEFI, e.Dir)
	}
	p := e.path(name)
	clearImmutable(p)
	buf := make([]byte, 4+len(data))
	binary.LittleEndian.PutUint32(buf, varAttrsNBR)
	copy(buf[4:], data)
	// efivarfs wants the whole variable in a single write.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("EFI variable %s: %w", name, err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("EFI variable %s: %w", name, err)
	}
	return f.Close()
}

func clearImmutable(p string) {
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsImmutableFL == 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL))
}

// LoadOption is a decoded Boot#### variable.
type LoadOption struct {
	Num         uint16
	Active      bool
	Description string
	// Partition is the GPT partition GUID of the hard-drive node, if any.
	Partition string
	Path      string // file path node, backslashes
}

// DiskPath locates a loader for a load option: the partition it is on and
// the file path.
type DiskPath struct {
	PartNum    uint32
	Start, Len uint64 // in sectors
	PartGUID   string // PARTUUID
	File       string // "\EFI\systemd\systemd-bootx64.efi"
}

// EncodeLoadOption builds an EFI_LOAD_OPTION with a hard-drive(GPT) and a
// file-path device path node.
func EncodeLoadOption(desc string, p DiskPath) ([]byte, error) {
	guid, err := guidBytes(p.PartGUID)
	if err != nil {
		return nil, err
	}
	var dp bytes.Buffer
	// Media device path, hard drive (type 4, subtype 1), 42 bytes.
	hd := make([]byte, 42)
	hd[0], hd[1] = 4, 1
	binary.LittleEndian.PutUint16(hd[2:], 42)
	binary.LittleEndian.PutUint32(hd[4:], p.PartNum)
	binary.LittleEndian.PutUint64(hd[8:], p.Start)
	binary.LittleEndian.PutUint64(hd[16:], p.Len)
	copy(hd[24:40], guid)
	hd[40], hd[41] = 2, 2 // GPT partition format, GUID signature
	dp.Write(hd)
	// Media device path, file path (type 4, subtype 4).
	file := utf16z(strings.ReplaceAll(p.File, "/", `\`))
	fp := make([]byte, 4, 4+len(file))
	fp[0], fp[1] = 4, 4
	binary.LittleEndian.PutUint16(fp[2:], uint16(4+len(file)))
	dp.Write(append(fp, file...))
	dp.Write([]byte{0x7f, 0xff, 4, 0}) // end of device path
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint32(loadActive))
	binary.Write(&out, binary.LittleEndian, uint16(dp.Len()))
	out.Write(utf16z(desc))
	out.Write(dp.Bytes())
	return out.Bytes(), nil
}

// DecodeLoadOption reads an EFI_LOAD_OPTION far enough to list it.
func DecodeLoadOption(num uint16, b []byte) (LoadOption, error) {
	lo := LoadOption{Num: num}
	if len(b) < 6 {
		return lo, fmt.Errorf("Boot%04X: %d bytes", num, len(b))
	}
	lo.Active = binary.LittleEndian.Uint32(b)&loadActive != 0
	dpLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	var desc []uint16
	for len(rest) >= 2 {
		c := binary.LittleEndian.Uint16(rest)
		rest = rest[2:]
		if c == 0 {
			break
		}
		desc = append(desc, c)
	}
	lo.Description = string(utf16.Decode(desc))
	if dpLen > len(rest) {
		return lo, fmt.Errorf("Boot%04X: device path of %d bytes in %d", num, dpLen, len(rest))
	}
	dp := rest[:dpLen]
	for len(dp) >= 4 {
		typ, sub, l := dp[0], dp[1], int(binary.LittleEndian.Uint16(dp[2:]))
		if l < 4 || l > len(dp) {
			break
		}
		switch {
		case typ == 4 && sub == 1 && l >= 42:
			lo.Partition = guidString(dp[24:40])
		case typ == 4 && sub == 4:
			var u []uint16
			for i := 4; i+1 < l; i += 2 {
				if c := binary.LittleEndian.Uint16(dp[i:]); c != 0 {
					u = append(u, c)
				}
			}
			lo.Path = string(utf16.Decode(u))
		}
		dp = dp[l:]
	}
	return lo, nil
}

// BootEntries lists Boot#### variables in BootOrder order, then the rest.
func (e Efivars) BootEntries() ([]LoadOption, []uint16, error) {
	ents, err := os.ReadDir(e.Dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, ErrNoEFI
		}
		return nil, nil, err
	}
	var out []LoadOption
	for _, de := range ents {
		n := de.Name()
		if !strings.HasPrefix(n, "Boot") || !strings.HasSuffix(n, "-"+GlobalVariable) || len(n) != 8+1+len(GlobalVariable) {
			continue
		}
		num, err := strconv.ParseUint(n[4:8], 16, 16)
		if err != nil {
			continue
		}
		_, data, err := e.Read(n[:8])
		if err != nil {
			return nil, nil, err
		}
		lo, err := DecodeLoadOption(uint16(num), data)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, lo)
	}
	var order []uint16
	if _, data, err := e.Read("BootOrder"); err == nil {
		for i := 0; i+1 < len(data); i += 2 {
			order = append(order, binary.LittleEndian.Uint16(data[i:]))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Num < out[j].Num })
	return out, order, nil
}

// AddBootEntry writes a Boot#### variable for the loader (reusing the
// number of an entry with the same description) and appends it to
// BootOrder. It returns the number.
func (e Efivars) AddBootEntry(desc string, p DiskPath) (uint16, error) {
	data, err := EncodeLoadOption(desc, p)
	if err != nil {
		return 0, err
	}
	ents, order, err := e.BootEntries()
	if err != nil {
		return 0, err
	}
	num, used := uint16(0), map[uint16]bool{}
	found := false
	for _, lo := range ents {
		used[lo.Num] = true
		if lo.Description == desc && !found {
			num, found = lo.Num, true
		}
	}
	if !found {
		for used[num] {
			num++
		}
	}
	if err := e.Write(fmt.Sprintf("Boot%04X", num), data); err != nil {
		return 0, err
	}
	for _, o := range order {
		if o == num {
			return num, nil
		}
	}
	order = append(order, num)
	ob := make([]byte, 2*len(order))
	for i, o := range order {
		binary.LittleEndian.PutUint16(ob[2*i:], o)
	}
	return num, e.Write("BootOrder", ob)
}

// SetBootNext makes the firmware boot entry num once, at the next boot.
func (e Efivars) SetBootNext(num uint16) error {
	ents, _, err := e.BootEntries()
	if err != nil {
		return err
	}
	for _, lo := range ents {
		if lo.Num == num {
			return e.Write("BootNext", binary.LittleEndian.AppendUint16(nil, num))
		}
	}
	return fmt.Errorf("Boot%04X: %w", num, ErrNoEntry)
}

func utf16z(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// guidBytes encodes a GUID string in EFI's mixed-endian byte order.
func guidBytes(s string) ([]byte, error) {
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return nil, fmt.Errorf("%q is not a GUID", s)
	}
	var raw [16]byte
	for i := range 16 {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%q is not a GUID", s)
		}
		raw[i] = byte(v)
	}
	out := make([]byte, 16)
	out[0], out[1], out[2], out[3] = raw[3], raw[2], raw[1], raw[0]
	out[4], out[5] = raw[5], raw[4]
	out[6], out[7] = raw[7], raw[6]
	copy(out[8:], raw[8:])
	return out, nil
}

func guidString(b []byte) string {
	return fmt.Sprintf("%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%X",
		b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10:16])
}
