# Two entry points (see README): `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Local copy on the dev/CI machines; for a CUDA build see README "Install".
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DATA := data/cluttered_mnist

.PHONY: demo test data clean-venv

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[demo,dev,ssl]'
	touch $@

data: $(BIN)/.installed
	$(BIN)/python -m samix_timm.data --out $(DATA)

demo: data
	$(BIN)/python train.py --config configs/embedded_quickstart.yaml --data-dir $(DATA) --mixup samix

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
