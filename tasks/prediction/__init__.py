"""Prediction on image files with a trained checkpoint: `predict.py`'s parts, one concern per module.

    arguments.py       the command line's checks that need no model (run before the heavy imports)
    checkpoint.py      checkpoint -> task module rebuilt from the config, classes and category ids stored in it
    inputs.py          the image files; reading them, unreadable ones reported and counted
    base.py            what a task's predictor provides; options
    classification.py  top-k labels -> predictions.csv / .json + a table
    detection.py       COCO results json + image ids + drawn boxes
    segmentation.py    class-index mask PNGs + overlays
    multitask.py       a joint checkpoint: each head's files as above + one drawn picture with everything
    run.py             predict(cfg): the loop with a progress bar
    evaluation.py      checks for `train.py train=false ckpt_path=...`

Nothing is imported here, so that `predict.py` can check its arguments before loading torch and Lightning.
"""
