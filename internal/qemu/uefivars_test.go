package qemu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

func TestReadUEFIVarsOfAFreshStore(t *testing.T) {
	testenv.NeedFile(t, OVMFVars, "ovmf")
	vars, err := ReadUEFIVars(OVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d variables in a fresh store", len(vars))
	bad := filepath.Join(t.TempDir(), "bad.fd")
	os.WriteFile(bad, make([]byte, 4096), 0o644)
	if _, err := ReadUEFIVars(bad); err == nil {
		t.Fatal("a file of zeros parsed as a variable store")
	}
}
