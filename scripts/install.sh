# Create ./.venv if needed and install sasnet_components into it, torch pinned to 2.13.0 (the CPU
# build on a machine without CUDA). Sourced by demo.sh and run_tests.sh from the repository root:
#   . scripts/install.sh          # runtime dependencies
#   . scripts/install.sh test     # plus the test extras
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0" -r requirements.txt -e ".${1:+[$1]}"
