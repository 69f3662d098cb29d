"""The papers' evaluation networks, written to load their released files as they are.

One module per network family: `upernet` (CSAILVision UperNet-ResNet101, ADE20K),
`deeplab` (kazuto1011 DeepLabV2-ResNet101 with its multi-scale wrapper, COCO-Stuff),
`drn` (fyu/drn DRN-D-105, Cityscapes); `weights` reads a released file into a module
(every key required, the reference's bookkeeping keys ignored) and `images` turns user
images into the uint8 batches the networks' preprocessing starts from. The public entry
point is `spadegan.evaluation.paper_segmenter`.

Each network module provides `RELEASED_FILES` (the file names users download, in the order
`load` takes them), `NUM_CLASSES`, `PREPROCESSINGS` (the first is the default) and
`load(files, preprocessing, device) -> network`, where the network has `num_classes`,
`probabilities(images)` and `predict(images, multiscale)` on uint8 RGB (B, 3, H, W) batches.
"""
