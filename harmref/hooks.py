"""Forward hooks on the residual stream, registered only inside one context manager.

Sites follow the interpretability convention: `resid_pre` l is the input of
decoder layer l (a forward pre-hook, as in the paper's code), `resid_post` l its
output. A hook function takes the activation [batch, seq, d] and returns a
replacement or None. Decoder layers return a tensor in transformers 5 and a
tuple before; both are handled here, once.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM (`model.model.layers` for llama-likes)."""
    for path in ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers", "base_model.model.model.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


def _pre_hook(fn: HookFn):
    def hook(module, args, kwargs):
        if args:
            out = fn(args[0])
            if out is not None:
                return (out, *args[1:]), kwargs
        else:
            key = "hidden_states"
            out = fn(kwargs[key])
            if out is not None:
                kwargs = {**kwargs, key: out}
                return args, kwargs
        return None

    return hook


def _post_hook(fn: HookFn):
    def hook(module, args, output):
        if isinstance(output, tuple):
            out = fn(output[0])
            return None if out is None else (out, *output[1:])
        return fn(output)

    return hook


@contextlib.contextmanager
def add_hooks(model, hooks: Iterable[tuple[str, int, HookFn]]):
    """Register (site, layer, fn) hooks for the duration of the block; always removed."""
    layers = decoder_layers(model)
    handles = []
    try:
        for site, layer, fn in hooks:
            module = layers[layer]
            if site == "resid_pre":
                handles.append(module.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True))
            elif site == "resid_post":
                handles.append(module.register_forward_hook(_post_hook(fn)))
            else:
                raise ValueError(f"unknown hook site {site!r} (expected resid_pre or resid_post)")
        yield
    finally:
        for h in handles:
            h.remove()


def n_hooks(model) -> int:
    """Hooks currently registered on the decoder layers (for leak tests)."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in decoder_layers(model))
