#!/usr/bin/env sh
# Installs the Python oracles used by `cargo test` (tests/it/l402.rs). Set APERTURE_SKIP_PY=1 to
# skip those tests where Python is unavailable.
set -eu
python3 -m pip install --quiet pymacaroons==0.13.0
python3 -c 'import pymacaroons; assert pymacaroons.__version__ == "0.13.0", pymacaroons.__version__'
python3 -m pip install --quiet h2==4.2.0
echo "pymacaroons 0.13.0 and h2 4.2.0 ready"
