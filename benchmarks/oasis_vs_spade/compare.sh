#!/usr/bin/env bash
# Equal-budget comparison (issue 11): SPADE recipe vs OASIS recipe, 60 minutes each, run at
# the same time with one thread each so both see the same machine conditions.
set -u
COMMON="--dataset_mode landscapes --dataroot /work/data/landscapes128 --ngf 16 --ndf 16 \
  --norm_G spectralspadesyncbatch1x1 --crop_size 64 --load_size 64 --batchSize 8 --niter 100 \
  --gpu_ids -1 --seed 0 --nThreads 0 --print_freq 200 --display_freq 4000 --save_latest_freq 4000 \
  --save_epoch_freq 1 --checkpoints_dir /work/runs/checkpoints"
export OMP_NUM_THREADS=1
timeout -s INT 60m spadegan train --name cmp_spade $COMMON --use_vae --no_vgg_loss > /work/runs/cmp_spade.log 2>&1 &
# the configuration measured: SPADE's generator with OASIS' D and losses and spadegan's variants
# (since issue 22, --netD oasis alone trains the published OASIS generator with the official settings)
timeout -s INT 60m spadegan train --name cmp_oasis $COMMON --netD oasis --netG spade --d_classifier_torch_init \
  --labelmix_per_image --ema_decay 0.999 > /work/runs/cmp_oasis.log 2>&1 &
wait
