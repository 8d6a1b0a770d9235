"""bpfscope's tools: each a `<name>.bpf.c` beside the `<name>.py` that drives it and defines `TOOL`
(tools/_base.py's shape; tools/_registry.py finds them). Importing this package imports no tool."""
