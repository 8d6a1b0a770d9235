"""The kernel matrix: bpfscope's kernel tests on each Debian kernel line, in qemu guests (`make test-kernels`)."""
