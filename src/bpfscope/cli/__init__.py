"""The `bpfscope` command."""
