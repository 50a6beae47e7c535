package bootloader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Where things live on the ESP. Everything of imprint's is under
// \EFI\imprint\ and loader/entries/imprint-*.conf so other OSes' files are
// never touched.
const (
	Dir        = "/EFI/imprint"
	MenuFile   = Dir + "/menu.json"
	GrubCfg    = Dir + "/grub.cfg"
	LoaderConf = "/loader/loader.conf"
	EntriesDir = "/loader/entries"
	entryPfx   = "imprint-"
)

// Entry types.
const (
	TypeLocal     = "local"
	TypeDiskless  = "diskless"
	TypeNetboot   = "netboot"
	TypeChainload = "chainload"
)

// ErrNoEntry says an entry id is not in the menu.
var ErrNoEntry = errors.New("no such boot entry")

// ErrNoMenu says the ESP holds no imprint boot menu.
var ErrNoMenu = errors.New("no imprint boot menu on this ESP")

// Tries is systemd-boot's boot counting: the entry file name carries
// "+LEFT-DONE" and systemd-boot decrements LEFT on each try.
type Tries struct {
	Left int `json:"left"`
	Done int `json:"done"`
}

// Entry is one boot menu item.
type Entry struct {
	ID      string   `json:"id"`
	Type    string   `json:"type"`
	Title   string   `json:"title"`
	Version string   `json:"version,omitempty"`
	Linux   string   `json:"linux,omitempty"` // kernel, ESP path
	Initrd  []string `json:"initrd,omitempty"`
	Options string   `json:"options,omitempty"`
	EFI     string   `json:"efi,omitempty"` // EFI binary to chainload, ESP path
	// BIOS is how GRUB i386-pc starts a netboot entry (ipxe.lkrn plus a
	// script as its initrd), since it cannot chainload EFI binaries.
	BIOSLinux  string `json:"bios_linux,omitempty"`
	BIOSInitrd string `json:"bios_initrd,omitempty"`
	Tries      *Tries `json:"tries,omitempty"`
	// Slot names the root slot ("a", "b") a local entry boots; slot
	// entries are the ones with boot counting (counting.go).
	Slot string `json:"slot,omitempty"`
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Menu is the whole boot menu. menu.json on the ESP is its record; the
// systemd-boot and GRUB configurations are generated from it.
type Menu struct {
	Loader   string `json:"loader"`   // systemd-boot or grub
	Firmware string `json:"firmware"` // uefi, bios or both
	Default  string `json:"default"`
	Timeout  int    `json:"timeout"`
	// ESPUUID is the FAT volume id GRUB searches for, "ABCD-1234".
	ESPUUID string  `json:"esp_uuid,omitempty"`
	Entries []Entry `json:"entries"`
	// Fallback says imprint wrote the removable-media loader
	// \EFI\BOOT\BOOTX64.EFI (a copy of the UEFI loader); on an ESP shared
	// with another system it may be that system's, and is not imprint's to
	// check.
	Fallback bool `json:"fallback,omitempty"`
}

// Find returns the entry with id.
func (m *Menu) Find(id string) (*Entry, bool) {
	for i := range m.Entries {
		if m.Entries[i].ID == id {
			return &m.Entries[i], true
		}
	}
	return nil, false
}

// Validate checks a menu before it is written.
func (m *Menu) Validate() error {
	seen := map[string]bool{}
	for _, e := range m.Entries {
		if !idRE.MatchString(e.ID) {
			return fmt.Errorf("entry id %q: use 1-64 lower-case letters, digits, '.', '_', '-'", e.ID)
		}
		if seen[e.ID] {
			return fmt.Errorf("entry id %q is used twice", e.ID)
		}
		seen[e.ID] = true
		switch {
		case e.Linux != "" && e.EFI != "":
			return fmt.Errorf("entry %q has both a kernel and an EFI binary", e.ID)
		case e.Linux == "" && e.EFI == "":
			return fmt.Errorf("entry %q has neither a kernel nor an EFI binary", e.ID)
		}
		switch {
		case e.Slot != "" && e.ID != SlotEntryID(e.Slot):
			return fmt.Errorf("entry %q is slot %q's entry: its id must be %q", e.ID, e.Slot, SlotEntryID(e.Slot))
		case e.Slot == "" && strings.HasPrefix(e.ID, SlotEntryPrefix):
			return fmt.Errorf("entry id %q: ids starting with %q are the root slots' entries", e.ID, SlotEntryPrefix)
		case e.Slot == "" && e.Tries != nil:
			return fmt.Errorf("entry %q has a try counter but is no slot entry", e.ID)
		}
		if strings.ContainsAny(e.Title+e.Options, "\n\"") {
			return fmt.Errorf("entry %q: title and options must not contain newlines or double quotes", e.ID)
		}
	}
	if m.Default != "" && !seen[m.Default] {
		return fmt.Errorf("default entry %q: %w", m.Default, ErrNoEntry)
	}
	if m.Timeout < 0 {
		return fmt.Errorf("timeout %d is negative", m.Timeout)
	}
	return nil
}

// ReadMenu loads menu.json from an ESP.
func ReadMenu(f FS) (*Menu, error) {
	b, err := f.ReadFile(MenuFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || !f.Exists(MenuFile) {
			return nil, ErrNoMenu
		}
		return nil, err
	}
	var m Menu
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s is damaged: %w", MenuFile, err)
	}
	readCounters(f, &m)
	return &m, nil
}

// readCounters brings the slot entries' counters up to date from what the
// loaders changed since menu.json was written: systemd-boot renames entry
// files, GRUB rewrites grubenv.
func readCounters(f FS, m *Menu) {
	files := map[string][]*Tries{}
	named := map[string]bool{}
	if ents, err := f.ReadDir(EntriesDir); err == nil {
		for _, de := range ents {
			id, tries, ok := parseEntryName(de.Name())
			if !ok {
				continue
			}
			files[id] = append(files[id], tries)
			if e, found := m.Find(id); found && entryFileName(*e) == de.Name() {
				named[id] = true
			}
		}
	}
	var env map[string]string
	if b, err := f.ReadFile(GrubEnv); err == nil {
		env, _ = ParseGrubEnv(b) // a damaged block counts as none
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Slot == "" {
			continue
		}
		// The file menu.json names is still there: nothing renamed it
		// (or a write stopped before menu.json recorded its change, and
		// menu.json is what was committed). Otherwise systemd-boot
		// renamed it; of several files (a write stopped before removing
		// the old one) the one with the fewest tries left is the safe
		// reading.
		if !named[e.ID] && len(files[e.ID]) > 0 {
			e.Tries = fewestTries(files[e.ID])
		}
		if t, ok := grubEnvTries(env, e.ID); ok {
			e.Tries = mergeTries(e.Tries, t)
		}
	}
}

func fewestTries(ts []*Tries) *Tries {
	var best *Tries
	for _, t := range ts {
		if t != nil && (best == nil || t.Left < best.Left) {
			best = t
		}
	}
	return best // nil when every file is blessed
}

// mergeTries joins the two loaders' views of one entry: only one of them
// boots a given machine, so the lower count is the one that moved; the
// entry is good only when both say so (bless writes both).
func mergeTries(a, b *Tries) *Tries {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case b.Left < a.Left:
		return &Tries{Left: b.Left, Done: a.Done + a.Left - b.Left}
	}
	return a
}

var entryNameRE = regexp.MustCompile(`^imprint-([a-z0-9][a-z0-9_.-]*?)(?:\+(\d+)(?:-(\d+))?)?\.conf$`)

func parseEntryName(n string) (id string, tries *Tries, ok bool) {
	m := entryNameRE.FindStringSubmatch(n)
	if m == nil {
		return "", nil, false
	}
	if m[2] != "" {
		left, _ := strconv.Atoi(m[2])
		done, _ := strconv.Atoi(m[3])
		tries = &Tries{Left: left, Done: done}
	}
	return m[1], tries, true
}

func entryFileName(e Entry) string {
	n := entryPfx + e.ID
	if e.Tries != nil {
		n += "+" + strconv.Itoa(e.Tries.Left)
		if e.Tries.Done > 0 {
			n += "-" + strconv.Itoa(e.Tries.Done)
		}
	}
	return n + ".conf"
}

// renderEntry is a Boot Loader Specification type #1 file.
func renderEntry(e Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by imprint; change it with `imprint boot`\ntitle %s\n", e.Title)
	if e.Slot != "" {
		// With a sort-key, systemd-boot orders the slots by version,
		// newest first (counting.go).
		fmt.Fprintf(&b, "sort-key %s\n", SortKey)
	}
	if e.Version != "" {
		fmt.Fprintf(&b, "version %s\n", e.Version)
	}
	if e.EFI != "" {
		fmt.Fprintf(&b, "efi %s\n", e.EFI)
	} else {
		fmt.Fprintf(&b, "linux %s\n", e.Linux)
		for _, i := range e.Initrd {
			fmt.Fprintf(&b, "initrd %s\n", i)
		}
	}
	if opts := kernelOptions(e); opts != "" {
		fmt.Fprintf(&b, "options %s\n", opts)
	}
	return b.String()
}

// EntryArg is the kernel command line argument naming the entry that
// booted, for `imprint bless` under any loader.
const EntryArg = "imprint.entry"

// kernelOptions are e's options, plus imprint.entry= for a kernel entry.
func kernelOptions(e Entry) string {
	if e.EFI != "" {
		return e.Options
	}
	return strings.TrimSpace(e.Options + " " + EntryArg + "=" + e.ID)
}

func renderLoaderConf(m *Menu) string {
	var b strings.Builder
	b.WriteString("# written by imprint; change it with `imprint boot default`\n")
	switch {
	case m.slotsAreDefault():
		// Both slots' entries: systemd-boot boots the first in its
		// order, and a slot out of tries is sorted last (counting.go).
		fmt.Fprintf(&b, "default %s\n", SlotPattern)
	case m.Default != "":
		// A pattern, so the entry still matches when boot counting renames
		// its file.
		fmt.Fprintf(&b, "default %s%s*\n", entryPfx, m.Default)
	}
	fmt.Fprintf(&b, "timeout %d\nconsole-mode keep\neditor yes\n", m.Timeout)
	return b.String()
}

// renderGrub is the GRUB configuration for both GRUB EFI and GRUB i386-pc;
// entries that only make sense on one platform are guarded.
func renderGrub(m *Menu) string {
	var b strings.Builder
	b.WriteString("# written by imprint; change it with `imprint boot`\n")
	b.WriteString("serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n")
	fmt.Fprintf(&b, "set timeout=%d\n", m.Timeout)
	if m.slotsAreDefault() {
		renderGrubCounting(&b, m)
	} else if m.Default != "" {
		fmt.Fprintf(&b, "set default=%q\n", m.Default)
	}
	for _, e := range m.Entries {
		fmt.Fprintf(&b, "menuentry %q --id %q {\n", e.Title, e.ID)
		if m.ESPUUID != "" {
			fmt.Fprintf(&b, "\tsearch --no-floppy --fs-uuid --set=root %s\n", m.ESPUUID)
		}
		switch {
		case e.EFI != "" && e.BIOSLinux != "":
			fmt.Fprintf(&b, "\tif [ \"$grub_platform\" = efi ]; then\n\t\tchainloader %s %s\n\telse\n\t\tlinux16 %s\n", e.EFI, e.Options, e.BIOSLinux)
			if e.BIOSInitrd != "" {
				fmt.Fprintf(&b, "\t\tinitrd16 %s\n", e.BIOSInitrd)
			}
			b.WriteString("\tfi\n")
		case e.EFI != "":
			fmt.Fprintf(&b, "\tif [ \"$grub_platform\" != efi ]; then\n\t\techo \"%s needs UEFI\"\n\t\tsleep 3\n\t\treturn\n\tfi\n\tchainloader %s %s\n", e.Title, e.EFI, e.Options)
		default:
			if e.Slot != "" {
				renderGrubCountdown(&b, e)
			}
			fmt.Fprintf(&b, "\tlinux %s %s\n", e.Linux, kernelOptions(e))
			if len(e.Initrd) > 0 {
				fmt.Fprintf(&b, "\tinitrd %s\n", strings.Join(e.Initrd, " "))
			}
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// WriteMenu writes the menu's record and both loaders' configurations. Every
// file is replaced atomically, in an order that keeps the menu bootable at
// any crash point: new entry files first, then the files that point at
// them (loader.conf, grub.cfg), then menu.json, and stale entry files last.
func WriteMenu(f FS, m *Menu) error {
	if err := m.Validate(); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, e := range m.Entries {
		name := entryFileName(e)
		keep[name] = true
		if err := writeNew(f, path.Join(EntriesDir, name), []byte(renderEntry(e))); err != nil {
			return err
		}
	}
	if err := writeGrubEnv(f, m); err != nil {
		return err
	}
	if err := writeNew(f, LoaderConf, []byte(renderLoaderConf(m))); err != nil {
		return err
	}
	if err := writeNew(f, GrubCfg, []byte(renderGrub(m))); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeNew(f, MenuFile, append(b, '\n')); err != nil {
		return err
	}
	ents, err := f.ReadDir(EntriesDir)
	if err != nil {
		return err
	}
	var stale []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(strings.ToLower(n), entryPfx) && strings.HasSuffix(strings.ToLower(n), ".conf") && !keep[n] {
			stale = append(stale, n)
		}
	}
	sort.Strings(stale)
	for _, n := range stale {
		if err := f.Remove(path.Join(EntriesDir, n)); err != nil {
			return err
		}
	}
	return nil
}

// ParseEntryFile reads a type #1 entry file back (for list and tests).
func ParseEntryFile(text string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		out[k] = append(out[k], strings.TrimSpace(v))
	}
	return out
}
