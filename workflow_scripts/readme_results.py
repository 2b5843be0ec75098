"""Rule readme_results: the README's "Results on the embedded default" block, rendered from claims.csv.

`harmref readme` copies the file into README.md between its markers (docs/claims.md).
"""

import pandas as pd

from harmref import claims, io, runlog

log = runlog.start(snakemake)
rows = {m: pd.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input)}
io.write_text(snakemake.output[0], claims.readme_section(rows))
