#!/bin/sh
# Writes a minimal root filesystem tarball for `kiln import`: Debian's busybox-static
# (/bin/busybox) and the applet symlinks `busybox --install -s` makes, plus the few
# directories and files a shell expects. Needs only busybox-static (besides the shell,
# coreutils and tar every Debian system has).
#
#   testdata/busybox-base/make-rootfs.sh rootfs.tar
#   kiln import rootfs.tar busybox:local
set -eu
# The modes in the tarball must not depend on the caller's umask.
umask 022

out=${1:?usage: make-rootfs.sh OUT.tar}
busybox=${BUSYBOX:-/bin/busybox}
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "make-rootfs.sh: $busybox is not a busybox binary (apt-get install busybox-static)" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
    "$root/root" "$root/tmp" "$root/var" "$root/home"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# Run the copy, not the host's: it installs links to itself, under the new root.
"$root/bin/busybox" --install -s "$root/bin"
# --install writes absolute links to the rootfs as seen from here; make them relative.
for link in "$root"/bin/*; do
    [ -L "$link" ] || continue
    ln -sf busybox "$link"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
# Everything belongs to root whoever runs this: GNU tar (always there on Debian) can say
# so; busybox's tar records the files' real owners. kiln import sorts the entries and
# clamps the times itself.
dirs="bin sbin usr etc root tmp var home"
if tar --version 2>/dev/null | grep -q GNU; then
    # shellcheck disable=SC2086 # word splitting of $dirs is wanted
    (cd "$root" && tar --owner=0 --group=0 --numeric-owner -cf - $dirs) >"$out"
else
    # shellcheck disable=SC2086
    (cd "$root" && "$busybox" tar -cf - $dirs) >"$out"
fi
