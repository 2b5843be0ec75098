"""Rule refusal_tables: refusal rate per set, and Table 1 (with vs without post-instruction tokens)."""

from pathlib import Path

from harmref import io, runlog, tables

log = runlog.start(snakemake)
gens = {Path(p).stem: io.read_jsonl(p) for p in snakemake.input.chat}
io.write_table(tables.refusal_rates(gens, snakemake.wildcards.model), snakemake.output.rates[0])
pairs = {}
for p in snakemake.input.pairs:
    template, name = Path(p).parent.name, Path(p).stem
    pairs.setdefault(name, {})[template] = io.read_jsonl(p)
io.write_table(tables.post_instruction_table(pairs, snakemake.wildcards.model), snakemake.output.table1[0])
