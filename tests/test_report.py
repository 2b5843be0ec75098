"""The HTML report: table pages, sections, captions; `check_report` renders a real report in headless Chromium.

`check_report` needs a finished workflow run: tests/test_workflow.py calls it on the `.test` DAG it has
already built (one DAG run for both). The screenshots it takes are kept under `.ci/artefacts/` (or
$HARMREF_ARTEFACTS) and their paths are printed.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harmref import report

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = Path(os.environ.get("HARMREF_ARTEFACTS", ROOT / ".ci" / "artefacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# ---------------------------------------------------------------- unit tests (fast)
def test_table_page_escapes_cells_and_keeps_every_row(tmp_path):
    df = pd.DataFrame({"set": ["a", "b<script>alert(1)</script>"], "rate_%": [12.5, float("nan")], "n": [8, 3],
                       "refused": [True, False]})
    df.to_csv(tmp_path / "t.csv", index=False)
    report.write_table_html(tmp_path / "t.csv", tmp_path / "t.html", "tiny: t")
    page = (tmp_path / "t.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<tr>") == 3 and "12.5" in page and "(2 rows)" in page
    assert "<td>True</td>" in page and "<td>8</td>" in page


def test_a_broken_table_fails_naming_its_file(tmp_path):
    (tmp_path / "b.csv").write_text('a,b\n1,2\n3,4,5,6\n')
    with pytest.raises(ValueError, match=r"b\.csv.*not a readable CSV table"):
        report.write_table_html(tmp_path / "b.csv", tmp_path / "b.html", "b")
    assert not (tmp_path / "b.html").exists()


def test_empty_table_page(tmp_path):
    (tmp_path / "e.csv").write_text("")
    report.write_table_html(tmp_path / "e.csv", tmp_path / "e.html", "empty")
    assert "(0 rows)" in (tmp_path / "e.html").read_text()


def test_sources_of_a_model():
    targets = ["results/m/tables/a.csv", "results/m/tables/a.md", "results/m/claims.csv", "results/m/claims.md",
               "results/m/paper_tables.md", "results/other/tables/b.csv", "results/m/figures/f.png", "results/index.md"]
    assert report.sources(targets, "m") == {"a": "results/m/tables/a.csv", "claims": "results/m/claims.csv",
                                            "paper_tables": "results/m/paper_tables.md"}


def test_claims_summary_colours_verdicts_and_escapes(tmp_path):
    claims = pd.DataFrame({"claim": [1, 2], "title": ["Post-inst <b>tokens</b>", "Clustering"], "paper_where": ["Table 1", "Fig 2"],
                           "verdict": ["holds", "not measurable here"], "measured": ["with 100 %", "—"],
                           "paper": ["100 → 85.3 [P]", "—"], "reason": [float("nan"), "no accepted harmful prompt"]})
    frag = report.claims_summary_html(claims, "tiny")
    assert frag.count("<tr>") == 3 and "&lt;b&gt;tokens&lt;/b&gt;" in frag and "<style" not in frag
    assert "color:#1a7f37\">holds</td>" in frag and "no accepted harmful prompt" in frag and "holds: 1" in frag
    with pytest.raises(ValueError, match="tiny: missing column"):
        report.claims_summary_html(claims.drop(columns="verdict"), "tiny")


def test_markdown_page_renders_tables_and_undoes_markdown_escapes():
    text = "# Table 1\n\nours beside the `paper`\n\n| model | refusal |\n|---|---|\n| a\\_b | 1 \\| 2<br>x &lt;i&gt; |\n"
    page = report.markdown_html(text, "t")
    assert "<h1>Table 1</h1>" in page and "<code>paper</code>" in page
    assert "<th>model</th>" in page and ">a_b</td>" in page and ">1 | 2\nx &lt;i&gt;</td>" in page


def test_table_captions_carry_the_papers_numbers_from_the_data_file():
    assert "Llama3-Instruct-8B: with 96 [P]; without 58.9 [P]" in report.caption_of("table1_post_instruction", "t.csv")
    assert "harmfulness 37 (layer 13) [W≈]" in report.caption_of("fig4_steering_refusal", "t.csv")
    assert "The paper (" not in report.caption_of("refusal_rates", "t.csv")  # no paper numbers for it


FIGURE_PAPER = {"fig2_clustering": "fig2", "cosine_by_layer": "cosine", "fig4_steering_refusal": "fig4",
                "fig5_reply_inversion": "fig5", "fig6_jailbreaks": "fig6", "fig7_finetune_attack": "fig7"}
_NUM = r"\d+(?:\.\d+)?"


def _numbers(node) -> set[float]:
    if isinstance(node, dict):
        return set().union(*map(_numbers, node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*map(_numbers, node)) if node else set()
    if isinstance(node, (int, float)):
        return {abs(float(node))}
    return {float(x) for x in re.findall(_NUM, str(node))}


def test_figure_captions_quote_only_the_papers_numbers_in_the_data_file():
    """A number a figure caption gives for the paper must be in harmref/paper_numbers.yaml (so the two cannot drift)."""
    from harmref import paper

    for fig, section in FIGURE_PAPER.items():
        text = (ROOT / "report" / f"{fig}.rst").read_text()
        said = text[text.index("The paper"):]
        said = re.sub(r"Fig \d+|§[\d.]+|Table \d|App\. \w|Llama[23]|Qwen2|95 %|NeurIPS 2025", "", said)
        allowed = _numbers(paper.numbers()[section])
        stray = sorted({float(x) for x in re.findall(_NUM, said)} - allowed)
        assert not stray, f"report/{fig}.rst quotes {stray}, not in paper_numbers.yaml[{section}]"


def test_every_caption_is_clean_restructuredtext():
    """Captions render without a docutils warning (a stray |x| is a substitution, x_ a link, …)."""
    import jinja2
    from docutils.core import publish_parts

    class Snakemake:
        wildcards = {"model": "tiny", "name": "refusal_rates"}
        config = {"analysis_models": ["tiny"]}
        params = {"captions": {"refusal_rates": report.caption_of("refusal_rates", "results/tiny/tables/refusal_rates.csv")}}

    texts = {n: report.caption_of(n, f"results/tiny/tables/{n}.csv") for n in report.TABLES}
    for rst in sorted((ROOT / "report").glob("*.rst")):
        if rst.name != "workflow.rst":  # it includes run outputs; check_report renders it
            texts[rst.name] = jinja2.Template(rst.read_text()).render(snakemake=Snakemake)
    for name, text in texts.items():
        parts = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})
        assert parts["body"].strip(), name


def test_every_figure_is_a_report_item_with_a_caption_and_a_section():
    """Each PNG a rule writes is wrapped in report(), has report/{name}.rst and a section in harmref/report.py."""
    found = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for line in smk.read_text().splitlines():
            m = re.search(r'figures/(\{name\}|\w+)\.png', line)
            if m:
                found[m.group(1)] = ("report(" in line, smk.name, line.strip())
    assert {"fig2_clustering", "fig4_steering_refusal", "fig6_jailbreaks"} <= set(found) | set(report.FIGURES)
    for name, (wrapped, smk, line) in found.items():
        assert wrapped, f"{smk}: figure output not marked report(): {line}"
    for name in report.FIGURES:
        assert (ROOT / "report" / f"{name}.rst").read_text().strip(), name
        assert report.figure_section(name) in report.SECTIONS.values()
    geometry = (ROOT / "rules/directions.smk").read_text()
    for name in re.search(r"GEOMETRY_FIGURES = \[(.*)\]", geometry).group(1).replace('"', "").split(", "):
        assert name in report.FIGURES, f"geometry figure {name} has no report section"


def test_every_table_and_figure_of_the_default_run_is_in_the_report(tmp_path):
    """Dry run of the embedded default: every table gets an HTML page with a caption and a paper section,
    every figure a section (so a new table or figure cannot silently land in "Other tables")."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["data_root"] = str(ROOT / "data")
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                        "-n"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    tables = set(re.findall(r"results/([^/ ,]+)/tables/(\w+)\.csv", p.stdout))
    jobs = re.findall(r"rule report_pages:\n\s+input: ([^\n]*)", p.stdout)
    assert jobs, p.stdout[-2000:]
    pages = {(m, n) for job in jobs for m, n in re.findall(r"results/([^/ ,]+)/tables/(\w+)\.csv", job)}
    assert any("results/smollm2-135m-refusal/claims.csv" in job and "paper_tables.md" in job for job in jobs), jobs
    figures = set(re.findall(r"results/[^/ ,]+/figures/(\w+)\.png", p.stdout))
    assert {n for _, n in tables} >= {"table1_post_instruction", "cosine_by_layer", "table3_guards", "finetune_attack"}
    assert tables <= pages, sorted(tables - pages)
    missing = sorted({n for _, n in tables} - set(report.TABLES))
    assert not missing, f"tables without a report caption/section in harmref/report.py: {missing}"
    assert len(figures) >= 9 and figures <= set(report.FIGURES), sorted(figures - set(report.FIGURES))


# ---------------------------------------------------------------- the rendered report (called by test_workflow)
PROBE = """
<script>
window.addEventListener('load', async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const out = {figures: {}, errors: []};
  try {
    await sleep(500);
    out.menu_text = document.getElementById('app').innerText;
    out.claims_rows = document.querySelectorAll('#app .harmref-claims tbody tr').length;  // the first page, as rendered
    let last = null;
    for (const [path, entry] of Object.entries(results)) {
      if (!entry.mime_type.startsWith('image/')) continue;
      app.setView({content: 'img', contentPath: entry.data_uri, resultPath: path});  // what a result's eye button does
      let img = null;
      for (let t = 0; t < 50 && !(img && img.complete); t++) {
        await sleep(100);
        img = [...document.querySelectorAll('#app img')].find(i => i.getAttribute('src') === entry.data_uri);
      }
      // a truncated PNG still reports its header's size: draw it and count opaque pixels (the figures are
      // saved on an opaque background, so a fully decoded one is opaque everywhere)
      let opaque = 0;
      if (img && img.naturalWidth) {
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const px = ctx.getImageData(0, 0, c.width, c.height).data;
        for (let k = 3; k < px.length; k += 4) if (px[k] === 255) opaque++;
        opaque /= c.width * c.height;
      }
      out.figures[path] = img ? [img.naturalWidth, img.naturalHeight, opaque] : null;
      last = [path, entry];
    }
    const show = Object.entries(results).find(([p, e]) => p.endsWith(window.HARMREF_SHOW || '')) || last;
    if (show) app.setView({content: 'img', contentPath: show[1].data_uri, resultPath: show[0]});
  } catch (e) { out.errors.push(String(e)); }
  const pre = document.createElement('pre');
  pre.id = 'harmref-probe';
  pre.style.display = 'none';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def ensure_chromium() -> str:
    """The Chromium binary; installed from the Debian packages when missing and we are root (CI)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, timeout=900, env=env)
        exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is needed to render the report (apt-get install chromium)")
        pytest.skip("Chromium not installed and not root: cannot render the report (apt-get install chromium)")
    return exe


def chromium(exe: str, url: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1500,1000",
                               "--virtual-time-budget=30000", *args, url], capture_output=True, text=True, timeout=timeout)


def report_results(page: str) -> dict:
    """The report's own `results` table: {path: {name, caption, mime_type, data_uri, ...}}."""
    m = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', page, re.S)
    assert m, "no results table in the report"
    return json.loads(m.group(1))


def report_categories(page: str) -> dict:
    m = re.search(r'<script id="categories">\s*var categories = (.*?);\s*</script>', page, re.S)
    assert m, "no categories in the report"
    return json.loads(m.group(1))


def check_report(workdir: Path, run) -> None:
    """`snakemake --report` after a finished run: every figure and table is in it, in its section, with a
    caption; in headless Chromium the app renders its menu and every figure decodes (naturalWidth > 0)."""
    out = workdir / "results" / "report.html"
    run(workdir, "--report", str(out))
    page = out.read_text(encoding="utf-8")
    results, categories = report_results(page), report_categories(page)
    pngs = sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("figures/*.png"))
    tables = sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("tables/*.csv"))
    assert pngs and tables
    assert set(pngs) <= set(results), sorted(set(pngs) - set(results))
    for csv in tables:
        model, name = Path(csv).parts[1], Path(csv).stem
        item = f"results/{model}/report/{name}.html"
        assert item in results, f"{csv} has no report page"
        assert name in report.TABLES and report.section_of(name) in categories, f"{csv}: no section"
        assert csv in results[item]["caption"], results[item]["caption"]  # the caption names its data
        table = base64.b64decode(results[item]["data_uri"].split("base64,", 1)[1]).decode()
        rows = len(pd.read_csv(workdir / csv)) if (workdir / csv).stat().st_size > 1 else 0
        assert table.count("<tr>") == rows + 1, f"{item}: {table.count('<tr>') - 1} rows for {rows} in {csv}"
    for extra in ("tiny/report/claims", "tiny/report/paper_tables", "report_paper_tables"):
        assert f"results/{extra}.html" in results, extra
    for path, entry in results.items():
        assert entry["caption"].strip(), f"{path}: no caption"
    assert set(categories) <= set(report.SECTIONS.values()), categories
    m = re.search(r'<script id="workflow-desc">\s*var workflow_desc = (.*?);?\s*</script>', page, re.S)
    desc = json.loads(m.group(1))  # the first page (report/workflow.rst): the claims of every analysed model
    claims = pd.read_csv(workdir / "results/tiny/claims.csv")
    assert "Analysed models: tiny" in desc and desc.count("<tr>") == len(claims) + 1, desc[:2000]
    assert all(html.escape(t) in desc for t in claims["title"]), desc[:2000]

    exe = ensure_chromium()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    probe_page = workdir / "results" / "report_probe.html"
    end = page.rindex("</body>")  # the last one: the embedded libraries hold the string too
    probe_page.write_text(page[:end] + "<script>window.HARMREF_SHOW='fig2_clustering.png';</script>" + PROBE + page[end:],
                          encoding="utf-8")
    p = chromium(exe, probe_page.as_uri(), "--dump-dom")
    m = re.search(r'<pre id="harmref-probe"[^>]*>(.*?)</pre>', p.stdout, re.S)
    assert m, f"the report's page never finished in Chromium:\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}"
    probe = json.loads(html.unescape(m.group(1)))
    assert not probe["errors"], probe["errors"]
    assert probe["claims_rows"] == len(claims), f"first page shows {probe['claims_rows']} claims of {len(claims)}"
    for cat in categories:
        assert cat in probe["menu_text"], f"category {cat!r} not rendered in the report's menu"
    for path in pngs:
        size = probe["figures"].get(path)
        assert size and size[0] > 0 and size[1] > 0 and size[2] > 0.999, f"{path} did not load in Chromium: {size}"
    shots = {"report_first_page.png": out, "report_figure.png": probe_page}
    for name, src in shots.items():
        chromium(exe, src.as_uri(), f"--screenshot={ARTEFACTS / name}")
        assert (ARTEFACTS / name).stat().st_size > 10_000, name
        print(f"report screenshot: {ARTEFACTS / name}")
    probe_page.unlink()
