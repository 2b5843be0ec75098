"""Rule data_manifest: every prompt set's seed, sample size and source sha256s, checked by rebuilding it."""

from harmref import datasets, io, runlog

log = runlog.start(snakemake)
p = snakemake.params
sets = {name: io.read_jsonl(path) for name, path in zip(p.names, snakemake.input)}
entries = {}
for name, path in zip(p.names, snakemake.input):
    spec = p.specs[name]
    exclude = [sets[e] for e in spec.get("exclude", [])]
    entries[name] = {"file": path, "sha256": io.sha256_file(path),
                     **datasets.provenance(name, spec, sets[name], p.root, exclude, p.seed)}
    if not entries[name]["reproduced"]:
        raise ValueError(
            f"{path}: rebuilding {name!r} with seed {p.seed} gives different records; its sources or the sampler "
            f"changed since it was built. Rebuild it: snakemake --forcerun build_dataset"
        )
io.write_json(snakemake.output[0], {"seed": p.seed, "data_root": p.root, "datasets": entries})
log.info("%d sets reproduced from their sources with seed %s", len(entries), p.seed)
