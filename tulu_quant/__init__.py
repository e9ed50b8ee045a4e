"""tulu-quant: recover, quantize, export, validate and publish Tulu and other LLaMA-architecture models."""

__version__ = "0.1.0"
