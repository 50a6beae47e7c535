package bootloader

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOptionRoundTrip(t *testing.T) {
	p := DiskPath{PartNum: 2, Start: 4096, Len: 1048576, PartGUID: "542E0721-BF89-4217-9A8E-6FAB29D2BB7E", File: "/EFI/systemd/systemd-bootx64.efi"}
	b, err := EncodeLoadOption("imprint", p)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := DecodeLoadOption(7, b)
	if err != nil {
		t.Fatal(err)
	}
	if !lo.Active || lo.Description != "imprint" || lo.Partition != p.PartGUID || lo.Path != `\EFI\systemd\systemd-bootx64.efi` {
		t.Fatalf("decoded %+v", lo)
	}
	// The GUID is stored mixed-endian, as the UEFI specification says.
	g, _ := guidBytes("00112233-4455-6677-8899-AABBCCDDEEFF")
	if g[0] != 0x33 || g[4] != 0x55 || g[6] != 0x77 || g[8] != 0x88 {
		t.Fatalf("guid bytes % x", g)
	}
	if _, err := DecodeLoadOption(1, b[:10]); err == nil {
		t.Fatal("a truncated load option was accepted")
	}
}

func TestEfivarsAddEntryAndBootNext(t *testing.T) {
	dir := t.TempDir()
	e := Efivars{Dir: dir}
	// Firmware already has two entries in its order.
	other, _ := EncodeLoadOption("UEFI Shell", DiskPath{PartNum: 1, Start: 2048, Len: 100, PartGUID: "11111111-1111-1111-1111-111111111111", File: `\shell.efi`})
	e.Write("Boot0000", other)
	e.Write("Boot0001", other)
	e.Write("BootOrder", []byte{1, 0, 0, 0})
	p := DiskPath{PartNum: 2, Start: 4096, Len: 1048576, PartGUID: "542E0721-BF89-4217-9A8E-6FAB29D2BB7E", File: `\EFI\systemd\systemd-bootx64.efi`}
	num, err := e.AddBootEntry("imprint", p)
	if err != nil {
		t.Fatal(err)
	}
	if num != 2 {
		t.Fatalf("new entry got Boot%04X, want Boot0002", num)
	}
	again, _ := e.AddBootEntry("imprint", p)
	if again != num {
		t.Fatalf("adding the same entry twice made Boot%04X", again)
	}
	_, order, _ := e.BootEntries()
	if len(order) != 3 || order[2] != 2 {
		t.Fatalf("BootOrder %v", order)
	}
	if err := e.SetBootNext(num); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "BootNext-"+GlobalVariable))
	if binary.LittleEndian.Uint32(raw) != 7 || binary.LittleEndian.Uint16(raw[4:]) != 2 {
		t.Fatalf("BootNext file % x", raw)
	}
	if err := e.SetBootNext(9); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("BootNext to a missing entry: %v", err)
	}
	if _, _, err := (Efivars{Dir: filepath.Join(dir, "none")}).BootEntries(); !errors.Is(err, ErrNoEFI) {
		t.Fatalf("no efivarfs: %v", err)
	}
}
