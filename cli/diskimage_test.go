package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A whole GPT disk image, compressed, becomes an image whose partitions are
// deployed bit-for-bit; the old ESP's content is not part of it.
func TestBuildFromCompressedDiskImageAndDeploy(t *testing.T) {
	need(t, "sgdisk", "zstd", "cmp")
	dir := t.TempDir()
	img := filepath.Join(dir, "vendor.img")
	f, _ := os.Create(img)
	f.Truncate(200 << 20)
	f.Close()
	if out, err := exec.Command("sgdisk", "-n", "1:1M:+64M", "-t", "1:ef00", "-c", "1:EFI system",
		"-n", "2:0:+40M", "-t", "2:8304", "-c", "2:Root FS", "-n", "3:0:+8M", "-t", "3:8300", "-c", "3:data", img).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v %s", err, out)
	}
	root := filepath.Join(dir, "root.bin")
	data := filepath.Join(dir, "data.bin")
	randomFile(t, root, 40<<20)
	randomFile(t, data, 8<<20)
	for _, x := range []struct {
		src string
		off int64
	}{{root, 65 << 20}, {data, 105 << 20}} {
		b, _ := os.ReadFile(x.src)
		df, _ := os.OpenFile(img, os.O_RDWR, 0)
		df.WriteAt(b, x.off)
		df.Close()
	}
	if out, err := exec.Command("zstd", "-q", "-f", img, "-o", img+".zst").CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v %s", err, out)
	}
	b := buildImage(t, "--store", filepath.Join(dir, "store"), "--name", "vendor", "--disk-image", img+".zst")
	var names []string
	for _, p := range b.lay.Partitions {
		names = append(names, p.Name+":"+string(p.Role))
	}
	if got := len(b.lay.Partitions); got != 3 || b.lay.Partitions[0].Role != "esp" || b.lay.Partitions[1].Name != "root-fs" || b.lay.Partitions[2].Name != "data" || len(b.m.Partitions) != 2 {
		t.Fatalf("layout from the disk image: %v", names)
	}
	disk := filepath.Join(dir, "disk.img")
	mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", disk, "--size", "300M", "--yes")
	table := onDisk(t, disk).State.Table
	for name, src := range map[string]string{"root-fs": root, "data": data} {
		p, ok := table.Find(name)
		if !ok {
			t.Fatalf("no partition %s", name)
		}
		st, _ := os.Stat(src)
		out := filepath.Join(dir, name+".out")
		extractRange(t, disk, p.Start, st.Size(), out)
		if o, err := exec.Command("cmp", src, out).CombinedOutput(); err != nil {
			t.Errorf("%s: %v %s", name, err, o)
		}
	}
	if code, out, _ := run(t, "verify", "--disk", disk); code != 0 {
		t.Fatalf("verify: %s", out)
	}
}
