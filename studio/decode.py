"""A fast chat on an NVIDIA GPU through transformers alone: the adapter merged into the base,
one static KV cache kept per loaded model, and generate's compiled decode step.

Plain `generate` with a growing (dynamic) cache launches every layer's kernels from Python for
each new token, so an 8B model on an H200 writes about 11 tokens a second while its memory
bandwidth allows about 290. With a cache whose shapes never change, transformers compiles the
one-token forward once (torch.compile, CUDA graphs) and replays it; the cache is reset between
replies, never reallocated, so the compiled step is reused. Merging the LoRA weights removes its
extra small matmuls per layer. The CPU keeps the plain path: nothing here applies to it.
"""
from __future__ import annotations

import weakref

# the static cache of each loaded model: kept while the model lives, replaced only to grow
_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
CACHE_STEP = 2048          # cache lengths are rounded up to this, so few shapes ever compile


def compiles(model) -> bool:
    """Whether this model gets the static cache and compiled step: on CUDA, unquantised."""
    device = getattr(model, "device", None)
    return getattr(device, "type", None) == "cuda" and \
        getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_loaded_in_4bit",
                                                                     False)


def merged_for_chat(model):
    """The peft model's LoRA weights folded into its base where the chat compiles (no extra
    matmuls per layer); a quantised or CPU model keeps its adapter as loaded."""
    from peft import PeftModel

    if isinstance(model, PeftModel) and compiles(model.get_base_model()):
        return model.merge_and_unload()
    return model


def cache_kwargs(model, needed: int, force: bool = False) -> dict:
    """generate's arguments for a reply of up to `needed` tokens (prompt and new ones): this
    model's static cache, reset, grown first if too short. Empty where the model does not
    compile (the plain dynamic cache), unless `force` (tests on the CPU)."""
    if not (force or compiles(model)):
        return {}
    from transformers import StaticCache

    cache = _CACHES.get(model)
    if cache is None or cache.max_cache_len < needed:
        length = -(-needed // CACHE_STEP) * CACHE_STEP
        cache = StaticCache(config=model.config, max_cache_len=length)
        _CACHES[model] = cache
    cache.reset()
    return {"past_key_values": cache}


def warm_up(model, tokenizer, length: int = CACHE_STEP) -> None:
    """Compile the decode step now, at load time, so the first reply in the chat starts at
    once (the compilation takes seconds to a minute)."""
    if not compiles(model):
        return
    import torch

    ids = torch.tensor([tokenizer("Hello")["input_ids"]], device=model.device)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                       do_sample=False, pad_token_id=tokenizer.pad_token_id,
                       **cache_kwargs(model, length))
