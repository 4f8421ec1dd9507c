#!/bin/sh
# The image's entrypoint: make the container's own cgroups writable for the service, then exec it
# (so that the service is pid 1 and gets SIGTERM from `docker stop`).
#
# Docker mounts /sys/fs/cgroup read-only. The service makes one group per sandbox for its memory,
# process and CPU limits, so it needs them writable; that is safe only when the container has its own
# cgroup namespace (`--cgroupns private`, Docker's default on cgroup v2 hosts): the mounts then show
# the container's own group as their root, and whatever is made below it stays inside the
# container's limits. With the host's cgroup namespace nothing is changed, and the service says at
# start that sandboxes run without cgroup limits.
set -eu

own_namespace() {
    # Every line of /proc/self/cgroup ends in ":/" inside a private cgroup namespace.
    ! grep -qv ':/$' /proc/self/cgroup
}

if [ "$(id -u)" = 0 ] && [ -d /sys/fs/cgroup ]; then
    if own_namespace; then
        # Type, mount point, mount options and superblock options of every cgroup mount.
        awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1), $5, $6, $(i + 3); break } }' \
            /proc/self/mountinfo |
            while read -r type target options super; do
                # v2's one hierarchy, or the three v1 hierarchies the service uses; no other.
                case "$type:,$super," in
                cgroup2:* | cgroup:*,memory,* | cgroup:*,pids,* | cgroup:*,cpu,*) ;;
                *) continue ;;
                esac
                case ",$options," in
                *,ro,*)
                    # bind: change this mount's flags only, not the shared cgroup superblock's.
                    mount -o remount,bind,rw "$target" ||
                        echo "docker-entrypoint: cannot make $target writable (needs CAP_SYS_ADMIN)" >&2
                    ;;
                esac
            done
    else
        echo "docker-entrypoint: no cgroup namespace of its own (run with --cgroupns private):" \
            "sandboxes will run without memory, process and CPU limits" >&2
    fi
fi
exec "$@"
