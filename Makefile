# fedfraud — set-up is two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: install demo test lint bench certs clean

install: $(STAMP)

# torch goes first, pinned to the CPU wheel on local disk: letting pip resolve a bare `torch`
# would pull a multi-GB CUDA build. constraints.txt pins every other package.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	# CrypTen 0.4.1 declares an unusable `sklearn` dependency: install it alone, then its real deps.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt crypten==0.4.1
	$(BIN)/pip install --quiet -c constraints.txt omegaconf onnx
	# openmined-psi 2.0.6 pins protobuf==6.30.2, which Flower's grpcio refuses; it runs on 6.33.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt openmined-psi==2.0.6
	@echo "note: pip's 'crypten 0.4.1 requires sklearn, tensorboard, ...' above is expected: CrypTen runs without them"
	$(BIN)/python -c "from secure_agg._crypten_compat import import_crypten; import_crypten()"
	$(BIN)/python -c "import private_set_intersection.python"
	touch $(STAMP)

demo: install
	$(BIN)/fedfraud simulate --config simulations/demo.toml --out $(DEMO_OUT) --force  # a re-run replaces the demo

test: install
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/bench_federation.py

# Consortium CA, SuperLink certificate and 3 banks' node-auth keys into certs/generated/ (git-ignored);
# see certs/README.md and docs/operator-guide.md. Existing files are kept.
certs:
	certs/generate.sh --out certs/generated

clean:
	rm -rf $(VENV) runs
