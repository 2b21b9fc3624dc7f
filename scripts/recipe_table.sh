#!/usr/bin/env bash
# Remake results/recipe_study_table.md from the committed configs and validation evaluations (no test data read).
set -euo pipefail
cd "$(dirname "$0")/.."
S=results/study
python scripts/recipe_table.py --out results/recipe_study_table.md \
  "shipped default (v2)=$S/default_v2/bundle_config.json,results/default_val,,$S/default_v2/shifted.json" \
  "Lite0, reference recipe (light aug)=$S/lite0_light_s0/bundle_config.json,$S/lite0_light_s0/val,$S/lite0_light_s0/val_tta,$S/lite0_light_s0/shifted.json" \
  "Lite1, light aug, seed 1=$S/lite1_light_s1/bundle_config.json,$S/lite1_light_s1/val" \
  "Lite2, full aug=$S/lite2_full_s0/bundle_config.json,$S/lite2_full_s0/val,$S/lite2_full_s0/val_tta,$S/lite2_full_s0/shifted.json" \
  "Lite1 225x300, fine-tuned from Lite1 light, full aug=$S/lite1_hires_s2/bundle_config.json,$S/lite1_hires_s2/val" \
  "Lite1, medium aug, cut at 6 of 12 epochs=$S/lite1_medium_s3/bundle_config.json,$S/lite1_medium_s3/val" \
  "Lite2, light aug, seed 4=$S/lite2_light_s4/bundle_config.json,$S/lite2_light_s4/val" \
  "Lite2 distilled from the v4 ensemble=$S/lite2_distill_s6/bundle_config.json,$S/lite2_distill_s6/val" \
  "Lite1 distilled from the v4 ensemble, cut at 9 of 12 epochs=$S/lite1_distill_s7/bundle_config.json,$S/lite1_distill_s7/val" \
  "Lite2, light aug, seed 8=$S/lite2_light_s8/bundle_config.json,$S/lite2_light_s8/val" \
  "Lite1, light aug, seed 9=$S/lite1_light_s9/bundle_config.json,$S/lite1_light_s9/val" \
  "Lite0, light aug, seed 10, cut at 5 of 8 epochs (--max-minutes 30)=$S/lite0_light_s10/bundle_config.json,$S/lite0_light_s10/val" \
  "Lite2, medium aug, distilled from candidate v6, cut at 5 of 8 epochs (--max-minutes 105)=$S/lite2_medium_distill_s11/bundle_config.json,$S/lite2_medium_distill_s11/val" \
  "Lite2, light aug, distilled from candidate v6, 12 epochs=$S/lite2_light_distill_s12/bundle_config.json,$S/lite2_light_distill_s12/val" \
  "Lite0, reference recipe + Shades of Gray (seed 0)=$S/lite0_light_sog_s0/bundle_config.json,$S/lite0_light_sog_s0/val,,$S/lite0_light_sog_s0/shifted.json" \
  "Lite2, light aug, Shades of Gray, distilled from v6, seed 13=$S/lite2_light_sog_distill_s13/bundle_config.json,$S/lite2_light_sog_distill_s13/val" \
  "Lite1, light aug, Shades of Gray, distilled from v6, seed 14=$S/lite1_light_sog_distill_s14/bundle_config.json,$S/lite1_light_sog_distill_s14/val" \
  "Lite2, light aug, Shades of Gray, distilled from v6, seed 15 (7 epochs, fp32)=$S/lite2_light_sog_distill_s15/bundle_config.json,$S/lite2_light_sog_distill_s15/val" \
  "Lite2, light aug, Shades of Gray, distilled from v6, seed 16 (8 epochs, fp32)=$S/lite2_light_sog_distill_s16/bundle_config.json,$S/lite2_light_sog_distill_s16/val" \
  "Lite2, light aug, Shades of Gray, distilled from v6, CutMix, seed 17 (7 epochs, fp32)=$S/lite2_light_sog_distill_cutmix_s17/bundle_config.json,$S/lite2_light_sog_distill_cutmix_s17/val" \
  "Lite2 225x300 (upsampled input), light aug, Shades of Gray, distilled from v6, seed 18 (6 epochs, fp32)=$S/lite2_light_sog_distill_hires_s18/bundle_config.json,$S/lite2_light_sog_distill_hires_s18/val" \
  "Lite2, robust aug (JPEG + noise), Shades of Gray, distilled from v6, seed 20 (6 epochs, fp32)=$S/lite2_robust_sog_distill_s20/bundle_config.json,$S/lite2_robust_sog_distill_s20/val" \
  "Lite2, robust aug (JPEG + noise), Shades of Gray, distilled from v6, seed 21 (5 epochs, fp32)=$S/lite2_robust_sog_distill_s21/bundle_config.json,$S/lite2_robust_sog_distill_s21/val" \
  "Lite2, robust aug (JPEG + noise), Shades of Gray, distilled from v6, seed 22 (7 epochs, fp32)=$S/lite2_robust_sog_distill_s22/bundle_config.json,$S/lite2_robust_sog_distill_s22/val" \
  "Lite2 225x300 (upsampled input), robust aug (JPEG + noise), Shades of Gray, distilled from v6, seed 23 (cut at 5 of 6 epochs, fp32)=$S/lite2_robust_sog_distill_hires_s23/bundle_config.json,$S/lite2_robust_sog_distill_hires_s23/val" \
  "ensemble Lite0 + Lite2, mean of logits=$S/ens_lite0_lite2_plain/bundle_config.json,$S/ens_lite0_lite2_plain/val" \
  "ensemble Lite0 + Lite2, 4 flips (served TTA)=$S/ens_lite0_lite2_flips/bundle_config.json,$S/ens_lite0_lite2_flips/val" \
  "shipped default (v3): Lite0 + Lite1 + Lite2=$S/default_v3/bundle_config.json,$S/default_v3/val,,$S/default_v3/shifted.json" \
  "shipped default (v6), int8: Lite0 + Lite1 + Lite2 + Lite1, gate-only Lite2=$S/default_v6c/bundle_config.json,$S/default_v6c/val,,$S/default_v6b/shifted.json"
