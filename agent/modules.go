package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imprint-dev/imprint/agent/kmod"
	"golang.org/x/sys/unix"
)

// Modules are what the agent needs from the kernel: network cards QEMU and
// common servers have, packet sockets for DHCP, block devices, ext4,
// overlayfs and loop. Names the kernel lacks are skipped.
var Modules = []string{
	"af_packet", "virtio_pci", "virtio_net", "e1000", "e1000e", "igb", "ixgbe", "r8169", "tg3", "bnxt_en",
	"virtio_blk", "virtio_scsi", "ahci", "sd_mod", "nvme",
	"ext4", "overlay", "loop",
	// The on-demand diskless root is an NBD device served by the agent.
	"nbd",
	// Entropy: DHCP transaction ids and TLS need the kernel's random pool,
	// which on machines without a CPU RNG may not fill without a device.
	"virtio_rng",
}

// moduleParams are the parameters the agent loads modules with. nbd:
// a few devices are plenty, and no partition scan: the device holds a
// filesystem, and a scan would read (so fetch) its first and last chunks
// for a partition table that is not there.
var moduleParams = map[string]string{"nbd": "nbds_max=4 max_part=0"}

func loadModules(a *Agent) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	release := unix.ByteSliceToString(uts.Release[:])
	dir := filepath.Join("/lib/modules", release)
	idx, err := kmod.Load(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, n := range Modules {
		if _, err := idx.Resolve(n); err == nil {
			names = append(names, n)
		}
	}
	mods, err := idx.Resolve(names...)
	if err != nil {
		return err
	}
	var failed []string
	for _, m := range mods {
		f, err := os.Open(filepath.Join(dir, m.Path))
		if err != nil {
			failed = append(failed, m.Name)
			continue
		}
		err = unix.FinitModule(int(f.Fd()), moduleParams[m.Name], 0)
		f.Close()
		if err != nil && err != unix.EEXIST && !m.Optional {
			failed = append(failed, fmt.Sprintf("%s (%v)", m.Name, err))
		}
	}
	a.say("loaded %d kernel modules", len(mods)-len(failed))
	if len(failed) > 0 {
		return fmt.Errorf("could not load %s", strings.Join(failed, ", "))
	}
	return nil
}
