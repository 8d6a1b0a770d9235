#!/bin/busybox sh
# /init of the guest's initramfs: load the 9p modules, mount the host's root read-only, and run the
# host's run.sh chrooted in /host/$(cat /root) (the host's own root, or a foreign-architecture root
# under it), with writable tmpfs where tests write and the host folders in /binds mounted at the same
# paths inside. run.sh's exit status goes to the out share.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do insmod "/modules/$module"; done < /modules/order

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 host /host
mkdir -p /hostview
mount --bind /host /hostview  # the host's folders as they are, for /binds, once tmpfs covers /tmp
root=/host$(cat /root)
# a foreign root must be a mount point of its own, or `ip netns exec` cannot make / a slave mount
[ "$root" = /host ] || mount --bind "$root" "$root"
mount -t tmpfs tmpfs $root/tmp
mount -t tmpfs tmpfs $root/run
# host folders the guest needs at their own paths (the checkout, its venv): after the tmpfs, so a
# checkout under /tmp is seen
while read -r dir; do mkdir -p "$root$dir" && mount --bind "/hostview$dir" "$root$dir"; done < /binds
mkdir $root/tmp/vmout
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out $root/tmp/vmout
mount -t proc proc $root/proc
mount -t sysfs sysfs $root/sys
mount -t cgroup2 cgroup2 $root/sys/fs/cgroup  # where systemd puts it; the tools' cgroup filters need one
mount -t devtmpfs devtmpfs $root/dev
mkdir -p $root/dev/shm $root/dev/pts
mount -t tmpfs tmpfs $root/dev/shm
mount -t devpts devpts $root/dev/pts
# The kernel asks for modules (veth, cls_bpf, ...) through this helper: the host's kmod, reading the
# guest kernel's modules from the cache, since the host's /lib/modules is not this kernel's.
echo /modprobe > /proc/sys/kernel/modprobe
ip link set lo up

chroot $root /bin/sh /tmp/vmout/run.sh > $root/tmp/vmout/output.log 2>&1
echo $? > $root/tmp/vmout/status
sync
poweroff -f
