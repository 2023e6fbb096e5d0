"""Real text for the generative LLM workload: a public-domain novel and 200 labelled sentences.

First in the LLM's data path: ``suites.zoo.llm`` asks these functions for text before it
tokenizes anything; nothing is downloaded at run time.

- *Pride and Prejudice* (Jane Austen, 1813; public domain) from the Debian package
  ``r-cran-janeaustenr`` (MIT). The package stores R data: ``data/Rdata.rdx`` is a gzip'd
  serialized R list whose ``variables`` map each object name to ``(offset, length)`` in
  ``data/Rdata.rdb``; each chunk there is a 4-byte big-endian length followed by a zlib
  stream of one serialized R object (a character vector, one line of the book per element).
  PyPI ``rdata`` parses the serialized objects. ``apt-get install`` would pull R itself, so
  the files are fetched with ``apt-get download`` + ``dpkg -x`` (no root needed):
  ``bench data install janeaustenr`` (or ``--genai``) does that (:mod:`suites.datasets`).
- The 200 labelled movie-review sentences (Pang & Lee polarity, 100 positive / 100 negative)
  inside the ``gensim`` wheel (``gensim/test/test_data/pang_lee_polarity.cor``, cp1252, one
  ``__label__pos|__label__neg TEXT`` per line), read as a plain file: gensim is never imported.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from harness.errors import BenchError, MissingDependency

AUSTEN_DEB = "r-cran-janeaustenr"
POLARITY_FILE = "gensim/test/test_data/pang_lee_polarity.cor"


def austen_base() -> Path:
    """Path prefix of ``Rdata.rdb`` / ``Rdata.rdx`` (without suffix), found by :mod:`suites.datasets`
    (source ``janeaustenr``: ``$BENCH_JANEAUSTENR``, ``bench data install janeaustenr``, or the
    system's package); one line naming the install command when absent."""
    from suites import datasets

    return datasets.path("janeaustenr", "Rdata.rdb").with_suffix("")


def _r_object(raw: bytes):
    import warnings

    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown file type: assumed RDS" (headerless serialization)
        return rdata.conversion.convert(rdata.parser.parse_data(raw))


def austen_book(name: str = "prideprejudice") -> list[str]:
    """The lines of one novel (``prideprejudice``, ``emma``, ``persuasion``, ...)."""
    try:
        import rdata  # noqa: F401
    except ImportError:
        raise MissingDependency("reading the Jane Austen text needs the package rdata (pip install rdata)") from None
    base = austen_base()
    index = _r_object(gzip.decompress(base.with_suffix(".rdx").read_bytes()))
    variables = index["variables"]
    if name not in variables:
        raise BenchError(f"no book '{name}' in {base}.rdb (choose from: {', '.join(map(str, variables))})")
    off, length = (int(v) for v in variables[name])
    with open(base.with_suffix(".rdb"), "rb") as f:
        f.seek(off)
        chunk = f.read(length)
    (n,) = struct.unpack(">I", chunk[:4])
    raw = zlib.decompress(chunk[4:])
    if len(raw) != n:
        raise BenchError(f"{base}.rdb: chunk of {name} decompresses to {len(raw)} bytes, header says {n}")
    return [str(s) for s in _r_object(raw)]


def austen_text(name: str = "prideprejudice") -> str:
    """One novel as plain text: lines joined, paragraphs (empty lines) kept as blank lines."""
    paras, cur = [], []
    for line in austen_book(name):
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras)


def polarity_path() -> Path:
    """The gensim wheel's polarity file, found by :mod:`suites.datasets` (source ``gensim-test-data``)."""
    from suites import datasets

    return datasets.path("gensim-test-data", Path(POLARITY_FILE).name)


def parse_polarity(text: str) -> tuple[list[str], list[int]]:
    """``__label__pos|neg SENTENCE`` lines -> (sentences, labels with 1 = positive, 0 = negative)."""
    sentences, labels = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        tag, _, sentence = line.partition(" ")
        if tag not in ("__label__pos", "__label__neg"):
            raise BenchError(f"polarity file line {i}: expected __label__pos|__label__neg, got {tag[:20]!r}")
        sentences.append(" ".join(sentence.split()))
        labels.append(1 if tag == "__label__pos" else 0)
    return sentences, labels


def polarity_sentences() -> tuple[list[str], list[int]]:
    """The 200 labelled sentences (cp1252 file) as (sentences, labels 1 = positive)."""
    return parse_polarity(polarity_path().read_text(encoding="cp1252"))
