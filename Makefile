# imprint — see README.md. `make demo` runs the main job, `make test` all tests.
GO ?= go
BIN := bin/imprint
DEB_PACKAGES := qemu-system-x86 ovmf seabios systemd-boot-efi grub-efi-amd64-bin grub-pc-bin \
	ipxe busybox-static e2fsprogs dosfstools mtools gdisk fdisk bmap-tools dnsmasq tftpd-hpa curl \
	nginx-light zstd xz-utils util-linux kmod cpio minisign man-db bash-completion debootstrap chromium rsync
export GOFLAGS ?= -mod=mod

.PHONY: all build test unit vmtest deps bench demo lint clean package package-test prefetch

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/imprint

# Installs what the tests need (Debian 12). Safe to run again.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

unit: build
	IMPRINT_STRICT=1 $(GO) test -count=1 ./...

vmtest: build
	IMPRINT_STRICT=1 $(GO) test -count=1 -tags vmtest -timeout 60m ./vmtests/... ./bootloader/...

test: deps prefetch lint unit vmtest package-test

# The Debian root some VM tests boot takes minutes to make on a new machine
# (debootstrap): start it now, beside lint and the unit tests. The VM tests
# call the same script, which waits on its lock and reuses the result.
prefetch:
	@mkdir -p /var/cache/imprint
	@nohup bash scripts/debian-root.sh >/var/cache/imprint/prefetch.log 2>&1 </dev/null &

# dist/out/imprint_<version>_amd64.deb (dpkg-deb; version from git describe).
package:
	GO=$(GO) bash dist/deb/build.sh

# Installs the package with apt-get in an overlay of / (needs root).
package-test: package
	bash dist/deb/test.sh

bench: deps build
	bash bench/run.sh
	bash bench/dhcp/run.sh
	bash bench/tftp/run.sh
	bash bench/tree/run.sh
	bash bench/sync/run.sh
	bash bench/sync/debian.sh
	bash bench/copier/debian.sh
	bash bench/diskless/run.sh
	bash bench/swarm/mesh.sh
	bash bench/swarm/run.sh
	bash bench/swarm/faults.sh

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin demo dist/out
