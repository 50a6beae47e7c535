package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// smallImage builds a 2 MiB random partition image with 256 KiB chunks.
func smallImage(t *testing.T) built {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "root.img")
	randomFile(t, data, 2<<20)
	layout := filepath.Join(dir, "layout")
	os.WriteFile(layout, []byte("esp esp 64M esp\nroot root-x86-64 auto image\n"), 0o644)
	return buildImage(t, "--store", filepath.Join(dir, "store"), "--name", "small", "--partition", "root="+data, "--layout", layout, "--chunk-size", "256K")
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		return "absent"
	}
	if st.IsDir() {
		return "directory"
	}
	return sha256Range(t, p, 0, st.Size())
}

func chunkPath(b built, i int) string {
	h := b.m.Partitions[0].Content.Chunks[i]
	return filepath.Join(b.store, "chunks", h[:2], h)
}

func TestDeployRefusesBadInput(t *testing.T) {
	existing := func(t *testing.T, size int64) string {
		p := filepath.Join(t.TempDir(), "disk.img")
		f, _ := os.Create(p)
		f.Write(bytes.Repeat([]byte("precious"), 4096))
		f.Truncate(size)
		f.Close()
		return p
	}
	for _, tc := range []struct {
		name string
		// prepare damages the store or makes the target; it returns the
		// deploy arguments to use instead of the defaults, if any.
		prepare func(t *testing.T, b built) (disk string, args []string)
		want    string
		// unchanged: the target must be byte-identical afterwards (or
		// still absent); otherwise it only must not be marked complete.
		unchanged bool
	}{
		{"corrupt chunk", func(t *testing.T, b built) (string, []string) {
			p := chunkPath(b, 3)
			raw, _ := os.ReadFile(p)
			raw[len(raw)/2] ^= 0xff
			os.WriteFile(p, raw, 0o644)
			return "", nil
		}, "checksum mismatch", false},
		{"truncated chunk", func(t *testing.T, b built) (string, []string) {
			p := chunkPath(b, 2)
			raw, _ := os.ReadFile(p)
			os.WriteFile(p, raw[:len(raw)/3], 0o644)
			return "", nil
		}, "checksum mismatch", false},
		{"missing chunk", func(t *testing.T, b built) (string, []string) {
			os.Remove(chunkPath(b, 5))
			return "", nil
		}, "not found", false},
		{"malformed manifest", func(t *testing.T, b built) (string, []string) {
			name, ver, _ := strings.Cut(b.name, ":")
			os.WriteFile(filepath.Join(b.store, "images", name, ver, "manifest.json"), []byte(`{"format": 1, "name": `), 0o644)
			return "", nil
		}, "malformed manifest", true},
		{"unknown manifest version", func(t *testing.T, b built) (string, []string) {
			name, ver, _ := strings.Cut(b.name, ":")
			p := filepath.Join(b.store, "images", name, ver, "manifest.json")
			raw, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(raw, []byte(`"format": 2`), []byte(`"format": 7`), 1), 0o644)
			return "", nil
		}, "format version 7 is not supported", true},
		{"unknown image name", func(t *testing.T, b built) (string, []string) {
			return "", []string{"--image", "nosuch"}
		}, `image "nosuch": not found`, true},
		{"unknown image version", func(t *testing.T, b built) (string, []string) {
			return "", []string{"--image", "small:9.9"}
		}, `version "9.9": not found`, true},
		{"new file too small for the layout", func(t *testing.T, b built) (string, []string) {
			return "", []string{"--size", "40M"}
		}, "target too small: the target has 40.0 MiB, the layout needs 69.0 MiB", true},
		{"existing file too small", func(t *testing.T, b built) (string, []string) {
			return existing(t, 50<<20), nil
		}, "target too small: the target has 50.0 MiB, the layout needs 69.0 MiB", true},
		{"no --yes and no terminal", func(t *testing.T, b built) (string, []string) {
			return existing(t, 100<<20), []string{"--yes=false"}
		}, "aborted", true},
		{"dry run", func(t *testing.T, b built) (string, []string) {
			return existing(t, 100<<20), []string{"--dry-run"}
		}, "", true},
		{"a directory", func(t *testing.T, b built) (string, []string) {
			return t.TempDir(), nil
		}, "is a directory", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := smallImage(t)
			disk, args := tc.prepare(t, b)
			full := []string{"deploy", "--from", b.store, "--image", b.name, "--yes"}
			if disk == "" {
				disk = filepath.Join(t.TempDir(), "disk.img")
				full = append(full, "--size", "100M")
			}
			full = append(full, "--disk", disk)
			before := fileSum(t, disk)
			full = append(full, args...)
			code, _, errs := run(t, full...)
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errs)
				}
			} else if code == 0 || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %q; want an error saying %q", code, errs, tc.want)
			}
			if tc.unchanged {
				if after := fileSum(t, disk); after != before {
					t.Fatalf("the target changed (%s -> %s)", before, after)
				}
			} else {
				notComplete(t, disk)
				if code, out, _ := run(t, "verify", "--disk", disk); code == 0 {
					t.Fatalf("verify passed on a failed deploy:\n%s", out)
				}
			}
		})
	}
}

func TestDeployRefusesMountedLoopDevice(t *testing.T) {
	need(t, "losetup", "mkfs.ext4", "mount", "umount")
	b := smallImage(t)
	backing := filepath.Join(t.TempDir(), "loop.img")
	f, _ := os.Create(backing)
	f.Truncate(100 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", backing).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		testenv.Skipf(t, "losetup cannot attach a loop device here: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := t.TempDir()
	if out, err := exec.Command("mount", loop, mnt).CombinedOutput(); err != nil {
		testenv.Skipf(t, "cannot mount a loop device here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	for _, target := range []string{loop, backing} {
		code, _, errs := run(t, "deploy", "--from", b.store, "--image", b.name, "--disk", target, "--yes")
		if code == 0 || !strings.Contains(errs, "target is mounted") || !strings.Contains(errs, mnt) {
			t.Fatalf("deploy to mounted %s: exit %d: %s", target, code, errs)
		}
	}
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	hdr := make([]byte, 8)
	f, _ = os.Open(backing)
	f.ReadAt(hdr, 512)
	f.Close()
	if string(hdr) == "EFI PART" {
		t.Fatal("a GPT was written onto the mounted device")
	}
	if out, err := exec.Command("e2fsck", "-fn", backing).CombinedOutput(); err != nil {
		t.Fatalf("the mounted filesystem was damaged: %v\n%s", err, out)
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	notGPT := filepath.Join(dir, "mbr.img")
	randomFile(t, notGPT, 4<<20)
	odd := filepath.Join(dir, "odd.img")
	randomFile(t, odd, 1000)
	part := filepath.Join(dir, "part.img")
	randomFile(t, part, 8<<20)
	small := filepath.Join(dir, "small.layout")
	os.WriteFile(small, []byte("esp esp 64M esp\nroot root-x86-64 4M image\n"), 0o644)
	bad := filepath.Join(dir, "bad.layout")
	os.WriteFile(bad, []byte("esp esp 64M esp\nroot root-x86-64 12Q image\n"), 0o644)
	noKernel := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(noKernel, "boot"), 0o755)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"disk image that is not GPT", []string{"--disk-image", notGPT}, "not a GPT disk image"},
		{"missing disk image", []string{"--disk-image", filepath.Join(dir, "nope.img")}, "no such file"},
		{"partition not a multiple of 512", []string{"--partition", "root=" + odd}, "not a multiple of 512"},
		{"content larger than the layout gives", []string{"--partition", "root=" + part, "--layout", small}, "the layout gives 4.0 MiB, the content is 8.0 MiB"},
		{"malformed layout", []string{"--partition", "root=" + part, "--layout", bad}, `line 2: size "12Q"`},
		{"partition missing from layout", []string{"--partition", "other=" + part, "--layout", small}, "image partition \"root\" has no content"},
		{"no input", nil, "give --rootfs, --partition or --disk-image"},
		{"bad name", []string{"--name", "../x", "--partition", "root=" + part}, "--name"},
		{"rootfs not a directory", []string{"--rootfs", part}, "is not a directory"},
		{"rootfs without a kernel", []string{"--rootfs", noKernel}, "no kernel in the root tree: " + noKernel + ": looked at /boot/vmlinuz-*"},
		{"no-kernel with kernel", []string{"--rootfs", noKernel, "--no-kernel", "--kernel", part}, "--no-kernel does not combine with --kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"build", "--store", store, "--name", "x"}, tc.args...)
			code, _, errs := run(t, args...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %q", code, errs, tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(filepath.Join(store, "images")); len(ents) != 0 {
		t.Fatalf("failed builds left images in the store: %v", ents)
	}
}
