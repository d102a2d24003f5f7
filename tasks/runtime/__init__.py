"""predict.py on an exported model (`export.py`'s ONNX file) with onnxruntime, numpy and Pillow: no torch is
imported on this path (pycocotools, numpy-based, too for Mask R-CNN's RLE masks).

    model.py       the ONNX file and its Cerberus metadata, run with onnxruntime
    preprocess.py  the checkpoint's eval preprocessing with Pillow and numpy, bit for bit
    predict.py     files -> the same output files and pictures as predict.py on the checkpoint
"""
