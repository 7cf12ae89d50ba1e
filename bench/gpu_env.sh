# Source on the GPU machine (see ../shared/gpu/README.md): unpack the package bundle and the
# real Qwen3 tokenizer, and put the bundle and this project first on the import path.
mkdir -p /tmp/site /tmp/qwen3-tok
tar -xJf .gpu-bundle/site.tar.xz -C /tmp/site
xz -dc .gpu-bundle/qwen3-tokenizer/tokenizer.json.xz > /tmp/qwen3-tok/tokenizer.json
cp .gpu-bundle/qwen3-tokenizer/tokenizer_config.json /tmp/qwen3-tok/
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 \
       PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false \
       PYTHONFAULTHANDLER=1   # a crashed run leaves its stack in its log
