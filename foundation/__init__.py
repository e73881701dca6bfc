"""The ground floor of robust-features: what every other package shares, and nothing more.

* :mod:`foundation.records` - JSON result records (atomic writes, provenance, strict numbers) and
  the hash helpers ``file_sha256`` / ``bytes_sha256`` / ``json_sha256``;
* :mod:`foundation.checks` - the one family of value checks (one ``ValueError`` line naming the
  parameter, its value and what is valid), the threat-model norms included;
* :mod:`foundation.estimate` - the one Monte-Carlo ``Estimate``;
* :mod:`foundation.paper` - the one table of the paper's numbers;
* :mod:`foundation.config` - the one config grammar (``--config``, ``--set``, typed by dataclasses);
* :mod:`foundation.locks` - folder locks; :mod:`foundation.runtime` - output-path checks, cache dirs.

It imports only the standard library (NumPy where an estimate needs it), never ``theory``,
``simulate``, ``empirical``, ``paper_figures`` or the command line (``robust_features``), so any
floor can import it (``tests/test_floors.py``).
"""

from foundation.records import (
    RECORD_SCHEMA,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    provenance,
    read_record,
    to_jsonable,
    write_record,
)

__all__ = [
    "RECORD_SCHEMA",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "provenance",
    "read_record",
    "to_jsonable",
    "write_record",
]
