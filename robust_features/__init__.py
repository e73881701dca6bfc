"""robust-features: shared plumbing (CLI entry point, result records, provenance).

The science lives in the top-level packages ``theory``, ``simulate``, ``empirical`` and
``paper_figures``; this package only holds what all of them share.
"""

__version__ = "0.1.0"

from robust_features.records import (  # noqa: E402
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
    "__version__",
    "RECORD_SCHEMA",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "provenance",
    "read_record",
    "to_jsonable",
    "write_record",
]
