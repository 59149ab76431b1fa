#!/usr/bin/env bash
# The measurements of firmware/README.md: runs the device tests (every model on every board it
# fits, printing one table row each) and then the instruction-mix profile of the paper 5-shot
# models per query (int8 on the STM32F405, f32 on the MPS2 AN386: the same Cortex-M4F code).
# Usage, from the repository root: firmware/scripts/measure.sh [output directory]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/device-measurements}
mkdir -p "$out"

cargo test -p tests --release --test device_qemu -- --nocapture --test-threads 1 \
    | tee "$out/device_qemu.txt" | grep -E '^\| [a-z0-9-]+ \| (mps2|netduino)' | awk '!seen[$0]++' \
    > "$out/table.md"
cat "$out/table.md"

work=target/tmp/awgim-device
for run in "paper5-int8 netduinoplus2" "paper1-int8 netduinoplus2" "paper5 mps2-an386"; do
    set -- $run
    echo "== $1 on $2"
    python3 firmware/scripts/profile.py --machine "$2" "$work/$1/firmware-$2.elf" \
        | tee "$out/profile-$1-$2.md"
done
