"""A fast chat on an NVIDIA GPU through transformers alone: the adapter merged into the base,
one static KV cache per loaded model, and a decode loop that replays the compiled one-token step.

Plain `generate` with a growing (dynamic) cache launches every layer's kernels from Python for
each new token, so the host, not the GPU's memory bandwidth, sets how fast it writes. With a
cache whose shapes never change, the one-token forward is compiled once (CUDA graphs and
autotuned kernels through torch.compile) and replayed; `generate` itself still waits for the
GPU after every token to decide whether to stop, so its Python work between tokens stays on the
clock (bench/HISTORY.md, rounds two and three; today's figure in BENCHMARKS.md). The loop here
keeps the chosen tokens on the GPU and looks at them after the first token and then every CHUNK
tokens, so the host queues the next steps while the GPU runs. Merging the LoRA weights removes
its extra small matmuls per layer. The CPU keeps the plain path; nothing here applies to it.
"""
from __future__ import annotations

import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

from backends.torch.compiled_layers import graph_trees_on_this_thread

CACHE_STEP = 2048       # cache lengths are rounded up to this, so few shapes ever compile
# the one-token step: CUDA graphs, as transformers' own default, plus autotuned Triton kernels
# for its matmuls with one row, fused with their neighbours: faster tokens for a longer warm-up
# at load (measured: bench/chat_probe.py, recorded in bench/HISTORY.md)
COMPILED = {"mode": "max-autotune"}
CHUNK = 16              # tokens decoded between two looks from the host (and two stream pieces)

# the decoder of each loaded model: kept while the model lives
_DECODERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiles(model) -> bool:
    """Whether this model gets the static cache and compiled step: on CUDA, unquantised."""
    device = getattr(model, "device", None)
    return getattr(device, "type", None) == "cuda" and \
        getattr(model, "hf_quantizer", None) is None


def merged_for_chat(model):
    """The peft model's LoRA weights folded into its base where the chat compiles (no extra
    matmuls per layer); a quantised or CPU model keeps its adapter as loaded."""
    from peft import PeftModel

    if isinstance(model, PeftModel) and compiles(model.get_base_model()):
        return model.merge_and_unload()
    return model


def decoder(model, compile: bool = True) -> "Decoder":
    """The model's one Decoder (made on first use)."""
    if model not in _DECODERS:
        _DECODERS[model] = Decoder(model, compile)
    return _DECODERS[model]


def pick(logits, temperature: float, top_p: float):
    """The next token of each row, on the device: greedy at temperature 0, else sampled from
    the top_p nucleus (no host round trip either way)."""
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p    # keeps the first always
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0))
    return torch.multinomial(probs, 1)[:, 0]


class Decoder:
    """One model's decode loop. Everything runs on one worker thread of its own: torch.compile
    records CUDA graphs per thread, so a reply from any of the server's threads replays the
    graphs the warm-up recorded."""

    def __init__(self, model, compile: bool = True):
        from transformers import CompileConfig

        self.model = model
        self.step = (model.get_compiled_call(CompileConfig(**COMPILED)) if compile
                     else model.__call__)
        self.cache = None
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="decode",
                                         initializer=graph_trees_on_this_thread if compile
                                         else None)

    def stream(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
               top_p: float = 1.0, stop_ids: Iterable[int] = ()) -> Iterator[list[int]]:
        """The reply's token ids, CHUNK at a time, ending before the first of `stop_ids`."""
        pieces: queue.Queue = queue.Queue()
        done, closed = object(), threading.Event()

        def emit(ids: list[int]) -> bool:
            pieces.put(ids)
            return not closed.is_set()      # the caller stopped reading: stop at this chunk

        def run():
            try:
                self._decode(prompt_ids, max_new_tokens, temperature, top_p, set(stop_ids),
                             emit)
            finally:
                pieces.put(done)

        future = self.worker.submit(run)
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:
            closed.set()
        future.result()          # an error in the loop is raised here, to the caller

    def warm_up(self) -> None:
        """Compile and record the step now, at load time, so the first reply starts at once."""
        for _ in self.stream([0] * 4, 3 * CHUNK):
            pass

    def _cache(self, needed: int):
        from transformers import StaticCache

        if self.cache is None or self.cache.get_max_cache_shape() < needed:
            length = -(-needed // CACHE_STEP) * CACHE_STEP
            self.cache = StaticCache(config=self.model.config, max_cache_len=length)
        self.cache.reset()
        return self.cache

    def _decode(self, prompt_ids, max_new_tokens, temperature, top_p, stop_ids,
                emit: Callable[[list[int]], bool]) -> None:
        import torch

        device, n = self.model.device, len(prompt_ids)
        cache = self._cache(n + max_new_tokens)
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([prompt_ids], device=device),
                                cache_position=torch.arange(n, device=device),
                                past_key_values=cache, use_cache=True,
                                logits_to_keep=1).logits[:, -1]
            token = pick(logits, temperature, top_p)
            chosen = torch.empty(max_new_tokens, dtype=torch.long, device=device)
            position = torch.tensor([n], device=device)
            sent = 0
            for i in range(max_new_tokens):
                chosen[i:i + 1].copy_(token)
                if i == 0 or (i + 1) % CHUNK == 0 or i + 1 == max_new_tokens:   # the first at once
                    ids = chosen[sent:i + 1].tolist()      # the one wait for the GPU a chunk
                    sent = i + 1
                    end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
                    if not emit(ids[:end]) or end is not None:
                        return
                if i + 1 == max_new_tokens:
                    return
                torch.compiler.cudagraph_mark_step_begin()
                logits = self.step(input_ids=token[:, None], cache_position=position,
                                   past_key_values=cache, use_cache=True).logits[:, -1]
                token = pick(logits, temperature, top_p)
                position += 1
