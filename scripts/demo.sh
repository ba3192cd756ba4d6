#!/usr/bin/env bash
# Set up and run the SASNet LA bundle end to end on a small synthetic dataset, on CPU:
# install, generate data, prepare it, train, evaluate. Outputs go to ./demo_output.
# Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/install.sh

out=demo_output
rm -rf "$out"
python scripts/make_synthetic_la.py --output_dir "$out/raw" --num_train 12 --num_test 2 --shape "[64,64,32]"
python scripts/prepare_la.py --input_dir "$out/raw" --output_dir "$out/prepared" --num_labeled 4 --num_validation 2

common=(--dataset_dir "$out/prepared" --output_dir "$out/runs" --ckpt_dir "$out/models" --device cpu
        --num_labeled 4 --patch_size "[48,48,32]" --network_def#n_filters 4 --num_workers 1)
python -m monai.bundle run training --config_file bundles/la/configs/train.yaml "${common[@]}" \
    --max_iterations 120 --val_interval 40 --checkpoint_interval 60 --log_interval 20
python -m monai.bundle run evaluating \
    --config_file "['bundles/la/configs/train.yaml','bundles/la/configs/evaluate.yaml']" "${common[@]}" \
    --eval_roi_size "[48,48,32]" --eval_stride "[16,16,8]"

echo
echo "demo outputs:"
echo "  trained model        $out/models/model.pt"
echo "  training checkpoints $out/runs/checkpoints/ (full state: network, optimizer, trainer, SAR memory)"
echo "  TensorBoard logs     $out/runs/tensorboard/   (tensorboard --logdir $out/runs/tensorboard)"
echo "  evaluation           $out/runs/eval_validation/metrics_per_case.csv and metrics_summary.json"
