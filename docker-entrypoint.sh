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
        # Mount point and options of every read-only cgroup (v1) or cgroup2 mount.
        awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^cgroup2?$/) print $5, $6; break } }' \
            /proc/self/mountinfo |
            while read -r target options; do
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
