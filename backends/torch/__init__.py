"""The training machinery the torch backends (transformers and Unsloth) share: the TRL recipe,
the lean Trainer, padding-free attention, compiled layers, the loss in one kernel, fp8 weights,
bf16 adapters, the chat's decode loop and one rank of a run over several processes. No backend
imports another; both import these."""
