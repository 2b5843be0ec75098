"""Rule build_dataset: normalise one prompt set."""

from harmref import datasets, io, runlog

log = runlog.start(snakemake)
spec = snakemake.params.spec
excluded = [io.read_jsonl(p) for p in snakemake.input.exclude]
records = datasets.build_set(
    snakemake.wildcards.dataset, spec, root=snakemake.params.root, exclude=excluded, seed=snakemake.params.seed,
)
if not records:
    raise ValueError(f"dataset {snakemake.wildcards.dataset!r} is empty after exclusions")
io.write_jsonl(snakemake.output[0], records)
log.info("%d prompts → %s", len(records), snakemake.output[0])
