# Sourced by the GPU-machine scripts (device_check.sh, paper_int8_check.sh): install the pure-Python
# wheels carried in .whl/ (MONAI, pydicom for the device machine's Python) into /tmp/site and put
# abdus's src/ on PYTHONPATH; without .whl/ only src/ is added.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1
