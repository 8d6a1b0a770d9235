"""Per-CPU values added up field by field, including arrays of structs (no root needed)."""

from __future__ import annotations

import numpy as np

from bpfscope.maps import sum_cpus

COUNT = np.dtype([("packets", "u8"), ("bytes", "u8")])
TABLES = np.dtype([("l3", COUNT, (4,)), ("l4", COUNT, (4,)), ("comm", "S8")])


def test_arrays_of_structs_are_summed_over_cpus_not_taken_from_cpu_0():
    cpus = 3
    values = np.zeros((2, cpus), dtype=TABLES)  # two entries, three CPUs
    for cpu in range(cpus):
        values["l3"]["packets"][:, cpu, 1] = cpu + 1
        values["l4"]["bytes"][:, cpu, 2] = 10 * (cpu + 1)
        values["comm"][:, cpu] = f"cpu{cpu}".encode()
    total = sum_cpus(values)
    assert total.shape == (2,)
    assert total["l3"]["packets"][:, 1].tolist() == [6, 6]
    assert total["l4"]["bytes"][:, 2].tolist() == [60, 60]
    assert total["comm"].tolist() == [b"cpu0", b"cpu0"]  # not a number: CPU 0's value


def test_plain_integers():
    values = np.arange(12, dtype="u4").reshape(3, 4)
    assert sum_cpus(values).tolist() == [6, 22, 38]
