// Package vmtests boots, in QEMU, what imprint builds and deploys, and checks
// from the host what the guest saw. The tests need the build tag vmtest
// (`make vmtest`): they download a Debian kernel once into $IMPRINT_CACHE and
// run machines under software emulation, which takes minutes. Set
// IMPRINT_VM_TIMEOUT_SCALE on slow machines.
//
// ./qemu is the machine harness, ./fixture the tiny bootable system.
package vmtests
