"""robust-features: the command line, the top floor of the toolkit.

Every command module lives here (:mod:`robust_features.cli` is the console script and ``python
-m robust_features``; ``cli_theory``, ``cli_simulate``, ``cli_core`` (train / eval / attack),
``cli_construct`` (construct / fig2 / table1 / fig3 / reproduce), ``cli_all`` and ``options``).
A command parses its options, calls one run function of a floor below and writes or prints what
it returns. The science lives in ``theory``, ``simulate``, ``empirical`` and ``paper_figures``;
what they all share (records, checks, the config grammar) is the ground floor, ``foundation``,
whose record helpers are re-exported here for convenience.
"""

__version__ = "0.1.0"

from foundation.records import (  # noqa: E402
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
