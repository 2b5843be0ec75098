"""harmref: harmfulness vs refusal in LLM hidden states (Zhao et al., NeurIPS 2025), reproduced.

One module per paper concept: `positions` (t_inst, t_post-inst), `activations`
(hidden states), `directions` (difference in means, scores), `judging`,
`generation`, `steering`, `latent_guard`, `organism`; `io` is the only module that touches files.
"""

__version__ = "0.1.0"
