"""One module per pipeline stage, each with a public run() and a step() for `tulu-quant run`."""
