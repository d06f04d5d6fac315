# Convenience targets; the scripts are the source of truth.
.PHONY: test-arm64

# arm64 (Raspberry Pi OS 64-bit) under qemu emulation: install line, predict, serve, parity with x86.
# Needs root (binfmt_misc, chroot, mounts); see scripts/test-arm64 --help.
test-arm64:
	scripts/test-arm64
