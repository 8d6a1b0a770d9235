#!/bin/busybox sh
# /init of the guest's initramfs: load the 9p modules, mount the host's root read-only with writable
# tmpfs where tests write, and run the host's run.sh inside it. Its exit status goes to the out share.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do insmod "/modules/$module"; done < /modules/order

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 host /host
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
mkdir /host/tmp/vmout
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /host/tmp/vmout
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t devpts devpts /host/dev/pts
# The kernel asks for modules (veth, cls_bpf, ...) through this helper: the host's kmod, reading the
# guest kernel's modules from the cache, since the host's /lib/modules is not this kernel's.
echo /modprobe > /proc/sys/kernel/modprobe
ip link set lo up

chroot /host /bin/sh /tmp/vmout/run.sh > /host/tmp/vmout/output.log 2>&1
echo $? > /host/tmp/vmout/status
sync
poweroff -f
