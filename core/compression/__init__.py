"""trainforge.core.compression: int8 conversion of Hugging Face causal LMs and the gated
compression of registry versions (issue 5, items 5 and 6). docs/compression.md.

    convert.py           quantize_model / save_int8 / load_int8: Int8Linear swap, compressed-tensors checkpoint
    compress.py          compress(): source folder -> int8 folder, perplexity/accuracy of both, the gate
    compress_version.py  VersionCompressor: CompressModel's checks (plan), then in a compression job a
                         registry version -> a child process running compress() -> a new
                         `compressed` version
    smoothing.py         SmoothQuant activation smoothing folded into the float weights before W8A8
    heldout.py           the built-in held-out English text for versions without validation data
    calibration_text.py  the built-in calibration text for smoothing (never the text the gate scores)
"""
