#!/usr/bin/env bash
# Runs the official-SDK conformance test against `jobwatch sim`.
# The venv lives under target/ so it stays out of git and `cargo clean`
# removes it. Needs network access to PyPI the first time only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/sdk-venv"
python="${PYTHON:-python3}"

# Pinned so that a new SDK release cannot change CI results unannounced;
# bump deliberately (core comes along at the same version).
sdk_version="3.1.219"
dateutil_version="4.0.0"   # the SDK's optional time parser; with it, times arrive as datetimes
stamp="$venv/.installed-$sdk_version-$dateutil_version"

if [ ! -f "$stamp" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "huaweicloudsdkworkspaceapp==$sdk_version" \
        "huaweicloudsdkcore==$sdk_version" \
        "python-dateutil==$dateutil_version"
    touch "$stamp"
fi

# Incremental: a no-op when the binary is up to date.
(cd "$root" && cargo build --quiet --bin jobwatch)

exec "$venv/bin/python" "$root/tests/sdk/sdk_conformance.py" "$root/target/debug/jobwatch"
