//! Linux 6.1 + busybox baseline guest for QEMU (being written).
