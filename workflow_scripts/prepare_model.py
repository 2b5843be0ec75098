"""Rule prepare_model: write the model card, converting GGUF or random sources to safetensors."""

from pathlib import Path

from harmref import models, runlog

log = runlog.start(snakemake)
spec = snakemake.params.spec
card = models.prepare(
    spec["source"], Path(snakemake.output[0]).parent, sha256=spec.get("sha256"),
    trust_remote_code=spec.get("trust_remote_code", False), seed=snakemake.params.seed,
    revision=spec.get("revision"),
)
log.info("model card: %s", card)
