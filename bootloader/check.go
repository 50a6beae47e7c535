package bootloader

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/imprint-dev/imprint/image"
)

// Files of the ESP that change on a running disk.
const (
	// RandomSeed is systemd-boot's seed file, refreshed on every boot.
	RandomSeed     = "/loader/random-seed"
	randomSeedSize = 32 // systemd-boot's seed, as bootctl and sd-boot write it
)

// LoaderCopies names the files on the ESP that Install copied from the
// image's loaders, ESP path -> loader name (image.Loader*), as the menu
// records them: the UEFI loader, its removable-media fallback copy when
// imprint wrote it, and iPXE for the netboot entry. Each must be the
// image's loader byte for byte.
func (m *Menu) LoaderCopies() map[string]string {
	out := map[string]string{}
	if m.Firmware != BIOS {
		own, name := systemdBootPath, image.LoaderSystemdBoot
		if m.Loader == Grub {
			own, name = grubEFIPath, image.LoaderGrubEFI
		}
		out[own] = name
		if m.Fallback {
			out[fallbackLoader] = name
		}
	}
	for _, e := range m.Entries {
		if e.Type != TypeNetboot {
			continue
		}
		if e.EFI != "" {
			out[e.EFI] = image.LoaderIPXEEFI
		}
		if e.BIOSLinux != "" {
			out[e.BIOSLinux] = LoaderIPXELkrn
		}
	}
	return out
}

// MenuFileCheck is a file of the boot menu that legitimately changes on a
// running disk (boot counting renames entries, `imprint boot` edits the
// menu, the loaders keep state), so it is checked for what it may hold,
// not byte for byte.
type MenuFileCheck struct {
	Path string `json:"path"`
	// May says what the file may hold.
	May string `json:"may"`
	// Problem, when set, says how the file is not what it may be.
	Problem string `json:"problem,omitempty"`
}

// CheckMenuFiles checks the boot menu's changing files on f: menu.json
// is a valid menu; each entry's file (under whatever boot-count name) and
// loader.conf and grub.cfg are what the menu renders; no imprint entry
// file is outside the menu; systemd-boot's random seed and GRUB's
// environment block, when present, have their loader's shape. It returns
// ErrNoMenu when the ESP has no imprint menu.
func CheckMenuFiles(f FS) ([]MenuFileCheck, error) {
	m, err := ReadMenu(f)
	if err != nil {
		return nil, err
	}
	var out []MenuFileCheck
	add := func(p, may, problem string) { out = append(out, MenuFileCheck{Path: p, May: may, Problem: problem}) }
	if err := m.Validate(); err != nil {
		add(MenuFile, "the menu's record, changed by imprint boot", err.Error())
		return out, nil
	}
	add(MenuFile, "the menu's record, changed by imprint boot", "")
	rendered := func(p, want, may string) {
		b, err := f.ReadFile(p)
		switch {
		case err != nil:
			add(p, may, fmt.Sprintf("cannot be read: %v", err))
		case !bytes.Equal(b, []byte(want)):
			add(p, may, "differs from what "+MenuFile+" renders")
		default:
			add(p, may, "")
		}
	}
	// Every imprint entry file, under whatever boot-count name the loader
	// gave it, holds what the menu renders for its entry; each entry has
	// one.
	has := map[string]bool{}
	if ents, err := f.ReadDir(EntriesDir); err == nil {
		names := make([]string, 0, len(ents))
		for _, de := range ents {
			names = append(names, de.Name())
		}
		sort.Strings(names)
		for _, n := range names {
			if !strings.HasPrefix(strings.ToLower(n), entryPfx) || !strings.HasSuffix(strings.ToLower(n), ".conf") {
				continue // another system's entry
			}
			p := path.Join(EntriesDir, n)
			id, _, ok := parseEntryName(n)
			e, found := m.Find(id)
			if !ok || !found {
				add(p, "nothing: imprint's entries are the menu's", "an imprint entry file that is not in "+MenuFile)
				continue
			}
			has[id] = true
			rendered(p, renderEntry(*e), "entry "+id+" as the menu renders it, under its boot-count name")
		}
	}
	for _, e := range m.Entries {
		if !has[e.ID] {
			p := path.Join(EntriesDir, entryFileName(e))
			add(p, "entry "+e.ID+" as the menu renders it", "missing")
		}
	}
	rendered(LoaderConf, renderLoaderConf(m), "the default and timeout as the menu renders them")
	rendered(GrubCfg, renderGrub(m), "the menu as GRUB's configuration")
	if f.Exists(RandomSeed) {
		b, err := f.ReadFile(RandomSeed)
		problem := ""
		if err != nil {
			problem = fmt.Sprintf("cannot be read: %v", err)
		} else if len(b) != randomSeedSize {
			problem = fmt.Sprintf("%d bytes, systemd-boot's seed has %d", len(b), randomSeedSize)
		}
		add(RandomSeed, "any 32 bytes, refreshed by systemd-boot on every boot", problem)
	}
	if f.Exists(GrubEnv) {
		b, err := f.ReadFile(GrubEnv)
		problem := ""
		if err != nil {
			problem = fmt.Sprintf("cannot be read: %v", err)
		} else if _, perr := ParseGrubEnv(b); perr != nil || len(b) != grubEnvSize {
			problem = fmt.Sprintf("not a GRUB environment block (%d bytes, want %d): %v", len(b), grubEnvSize, perr)
		}
		add(GrubEnv, "GRUB's environment block, changed by GRUB's boot counting", problem)
	}
	return out, nil
}
