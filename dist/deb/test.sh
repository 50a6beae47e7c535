#!/bin/bash
# Installs the built package with apt-get into a throwaway copy of this
# machine and checks what an admin gets: the binary and its version, man
# pages through man-db, the unit, completions that bash-completion finds;
# then purges it. The copy is an overlay whose lower layer is the host's /
# and whose upper layer is a tmpfs, inside a private mount namespace, so the
# host's dpkg database and files are never written.
# Usage: dist/deb/test.sh [DEB]      (make package-test; needs root)
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "package-test: $*" >&2; exit 1; }

if [ $# -ge 1 ]; then
	deb=$1
else
	debs=(dist/out/imprint_*_amd64.deb)
	[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "want exactly one dist/out/imprint_*_amd64.deb (make package), found: ${debs[*]}"
	deb=${debs[0]}
fi
[ "$(id -u)" -eq 0 ] || fail "needs root: it mounts an overlay of / in a private mount namespace"
version=$(dpkg-deb -f "$deb" Version)
[ "$(basename "$deb")" = "imprint_${version}_amd64.deb" ] || fail "$deb: file name does not match its Version $version"

# Every package the .deb names must be one Debian knows, or apt drops a
# Recommends without a word.
for field in Depends Recommends Suggests; do
	for p in $(dpkg-deb -f "$deb" "$field" | tr ',|' '  ' | sed 's/([^)]*)//g'); do
		dpkg-query -W "$p" >/dev/null 2>&1 || apt-cache show --no-all-versions "$p" >/dev/null 2>&1 ||
			fail "$field: package $p is unknown to dpkg and apt"
	done
done

host_before=$(dpkg-query -W -f='${Status} ${Version}' imprint 2>/dev/null || true)
host_bin_before=$(stat -c %i:%Y /usr/bin/imprint 2>/dev/null || true)

work=$(mktemp -d /tmp/imprint-package-test.XXXXXX)
trap 'rmdir "$work" 2>/dev/null || rm -rf "$work"' EXIT

start=$(date +%s)
# The script goes in as an argument, not on stdin, where chroot'd commands
# would read it.
inner=$(cat <<'INNER'
set -euo pipefail
work=$1 deb=$2 version=$3
fail() { echo "package-test: $*" >&2; exit 1; }
# Upper and work dirs on a tmpfs: overlayfs refuses an upper dir inside its
# own lower layer, and everything vanishes with the namespace anyway.
mount -t tmpfs -o mode=0755 imprint-test "$work"
cleanup() { umount -R "$work/root" 2>/dev/null || true; umount "$work"; }
trap cleanup EXIT
mkdir "$work/upper" "$work/ovl" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/ovl" "$work/root"
r=$work/root
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount --make-rslave "$r/dev"
mount -t tmpfs tmpfs "$r/tmp"
mount -t tmpfs tmpfs "$r/run"
# Some images tell dpkg to skip man pages (path-exclude); this root must get
# every file the package ships.
for f in "$r"/etc/dpkg/dpkg.cfg.d/*; do
	if [ -f "$f" ] && grep -q '^path-exclude' "$f"; then rm -f "$f"; fi
done
cp "$deb" "$r/tmp/"
inroot() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"; }
for tool in man:man-db /usr/share/bash-completion/bash_completion:bash-completion; do
	inroot sh -c "command -v ${tool%%:*} || test -f ${tool%%:*}" >/dev/null || fail "${tool#*:} is not installed on this host (make deps)"
done

# Depends must already be met here: --no-install-recommends keeps apt from
# the network, and the names were checked above.
inroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	"/tmp/$(basename "$deb")" >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get install failed"; }
inroot dpkg-query -W -f='${Status}' imprint | grep -qx 'install ok installed' || fail "imprint not installed in the test root"

[ "$(inroot sh -c 'command -v imprint')" = /usr/bin/imprint ] || fail "imprint is not /usr/bin/imprint on PATH"
inroot imprint --help >"$work/help" || fail "imprint --help failed"
grep -q '^  deploy ' "$work/help" || { cat "$work/help"; fail "imprint --help does not list deploy"; }
got=$(inroot imprint --version)
[ "$got" = "imprint version $version" ] || fail "imprint --version says '$got', want 'imprint version $version'"

[ "$(inroot man -w imprint-deploy)" = /usr/share/man/man1/imprint-deploy.1.gz ] || fail "man -w imprint-deploy: $(inroot man -w imprint-deploy 2>&1)"
inroot env MANWIDTH=80 man -P cat imprint-deploy >"$work/man" 2>/dev/null || fail "man imprint-deploy failed"
grep -q 'imprint deploy --from STORE' "$work/man" || { head -20 "$work/man"; fail "man imprint-deploy: no synopsis"; }
zcat "$r/usr/share/man/man1/imprint-deploy.1.gz" | grep '^\.TH "IMPRINT-DEPLOY" "1"' | grep -qF "\"imprint $version\"" ||
	fail "imprint-deploy.1: .TH header does not name version $version"
for c in $(inroot imprint --help | awk '/^Available Commands:/{on=1;next} /^$/{on=0} on{print $1}'); do
	[ "$c" = help ] || [ "$c" = completion ] || inroot man -w "imprint-$c" >/dev/null || fail "no man page for imprint $c"
done

unit=/lib/systemd/system/imprint-serve.service
[ -f "$r$unit" ] || fail "$unit missing"
grep -q '^ExecStart=/usr/bin/imprint serve' "$r$unit" || fail "$unit: ExecStart does not run /usr/bin/imprint"
for unit in /lib/systemd/system/imprint-sync.service /lib/systemd/system/imprint-sync.timer; do
	[ -f "$r$unit" ] || fail "$unit missing"
done
grep -q '^ExecStart=/usr/bin/imprint sync ' "$r/lib/systemd/system/imprint-sync.service" || fail "imprint-sync.service: ExecStart does not run imprint sync"

# bash-completion's own loader must find the file and the function must
# complete subcommands and flags by asking the installed binary.
comp=$(inroot bash -c '
	source /usr/share/bash-completion/bash_completion
	_completion_loader imprint
	complete -p imprint
	for line in "imprint dep" "imprint deploy --boot"; do
		read -ra COMP_WORDS <<<"$line"; COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE=$line; COMP_POINT=${#line}; COMPREPLY=()
		__start_imprint imprint 2>/dev/null
		echo "$line => ${COMPREPLY[*]}"
	done')
echo "$comp" | grep -q -- '-F __start_imprint imprint$' || fail "bash-completion does not load imprint's completion: $comp"
echo "$comp" | grep -qx 'imprint dep => deploy' || fail "bash completion of 'imprint dep': $comp"
echo "$comp" | grep -q 'imprint deploy --boot => .*--bootloader' || fail "bash completion of 'imprint deploy --boot': $comp"
for f in /usr/share/zsh/vendor-completions/_imprint /usr/share/fish/vendor_completions.d/imprint.fish; do
	[ -s "$r$f" ] || fail "$f missing"
done

inroot env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q imprint >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get purge failed"; }
for f in /usr/bin/imprint "$unit" /usr/share/man/man1/imprint.1.gz; do
	[ ! -e "$r$f" ] || fail "$f left behind after purge"
done
INNER
)
unshare --mount --propagation private bash -c "$inner" inner "$work" "$deb" "$version" </dev/null

[ "$(dpkg-query -W -f='${Status} ${Version}' imprint 2>/dev/null || true)" = "$host_before" ] || fail "the host's dpkg database changed"
[ "$(stat -c %i:%Y /usr/bin/imprint 2>/dev/null || true)" = "$host_bin_before" ] || fail "the host's /usr/bin/imprint changed"
echo "package-test: $(basename "$deb") installs, works and purges in a clean root ($(($(date +%s) - start)) s)"
