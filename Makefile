# Set-up and tasks. Every target creates .venv itself when needed.
#   make install   .venv with torch==2.13.0 (CPU wheel) and the package in editable mode + test extras
#   make test      install if needed, then run the test suite
#   make demo      main job: segment a sample photo (scikit-image's astronaut) with a point and a box;
#                  fetches the official RepViT-SAM weights on first use (or set CHECKPOINT=path)
#   make bench     every image-encoder backend and the mask decoder on this machine (repvit-sam bench)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench clean constraints

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q --durations=20

DEMO      := outputs/demo
CHECKPOINT ?=
CKPT_ARG  := $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),--model repvit)

demo: install
	mkdir -p $(DEMO)
	$(PY) -c "from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save('$(DEMO)/astronaut.png')"
	$(VENV)/bin/repvit-sam segment $(DEMO)/astronaut.png --point 225,130 $(CKPT_ARG) -o $(DEMO)/point
	$(VENV)/bin/repvit-sam segment $(DEMO)/astronaut.png --box 350,0,470,285 $(CKPT_ARG) -o $(DEMO)/box

bench: install
	$(PY) -m repvit_sam.bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache

# Re-resolve '.[dev]' from the ranges in pyproject.toml in a scratch venv and freeze it into constraints.txt.
constraints:
	rm -rf .venv-resolve && $(PYTHON) -m venv .venv-resolve
	.venv-resolve/bin/python -m pip install --quiet --upgrade pip
	.venv-resolve/bin/pip install --quiet torch==2.13.0
	.venv-resolve/bin/pip install --quiet -e '.[dev]'
	{ sed -n '1,3p' constraints.txt; .venv-resolve/bin/pip freeze --exclude-editable | grep -v '^repvit' | sed 's/+cpu$$//'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt && rm -rf .venv-resolve
