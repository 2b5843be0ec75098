"""Rule report_pages: every table of one model as an HTML page for the report, and the first page's claims fragment."""

import os
import shutil
from pathlib import Path

from harmref import io, report, runlog

log = runlog.start(snakemake)
model = snakemake.wildcards.model
sources = snakemake.params.sources
out = Path(snakemake.output.pages)
tmp = out.with_name(f".{out.name}.tmp")  # staged, then renamed: no half-written folder of pages
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
try:
    for name, src in sources.items():
        report.write_table_html(src, tmp / f"{name}.html", f"{model}: {name}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
if "claims" in sources:
    report.write_claims_summary(sources["claims"], snakemake.output.claims, model)
else:
    io.write_text(snakemake.output.claims, f"<p>{model}: no claims table in this run.</p>\n")
log.info("report pages for %s: %d tables", model, len(sources))
