# Create ./.venv if needed and install sasnet_components into it, torch pinned to 2.13.0 (the CPU
# build on a machine without CUDA). Sourced by demo.sh and run_tests.sh from the repository root:
#   . scripts/install.sh              # runtime dependencies
#   . scripts/install.sh monailabel   # plus MONAI Label 0.8.5 (keeps torch 2.13.0, see requirements-monailabel.txt)
#   . scripts/install.sh test         # plus MONAI Label and the test extras
case "${1:-}" in
    "" | monailabel | test) ;;
    *) echo "scripts/install.sh: unknown option '$1'; expected nothing, 'monailabel' or 'test'." >&2; return 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0" -r requirements.txt -e ".$([ "${1:-}" = test ] && echo "[test]")"
if [ -n "${1:-}" ]; then
    # the packages MONAI Label uses first, then MONAI Label itself without its declared dependencies
    # (sam2, torchvision, ...: see bundles/la/docs/monailabel.md); in this order pip reports no conflicts
    python -m pip install --quiet "torch==2.13.0" -r requirements-monailabel.txt
    python -m pip install --quiet --no-deps monailabel==0.8.5 pydicom-seg==0.4.1
fi
