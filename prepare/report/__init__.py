"""`prepare report`: one self-contained HTML page about a dataset, to look at rather than read: tokens by input,
document lengths, languages, what the screens removed, and the generations kept. Plots are PNG data URIs inside
the page, so it is one file to open, mail or attach. The generation in force is read under a lease, so a build
running meanwhile cannot collect the token files whose lengths it reads."""

import datetime
import html
import json
import os

from prepare import format as fmt
from prepare.info import summary
from prepare.report import sections

STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em}
td.n{text-align:right;font-variant-numeric:tabular-nums}p.note{color:#555}code{font-size:90%}"""


def write_report(data_dir, out=None):
    """Write the page (to DIR/report.html unless `out`): (path, bytes written, section titles)."""
    snapshot = fmt.open_snapshot(data_dir)
    try:
        manifest = snapshot.manifest
        records = fmt.read_sources(data_dir, manifest)
        figures = summary(data_dir, manifest, records)
        parts = [sections.tokens_by_input(records), sections.document_lengths(snapshot),
                 sections.languages(figures, records), sections.removed(figures, manifest.options),
                 sections.generations(data_dir, manifest)]
    finally:
        snapshot.close()
    path = out or os.path.join(data_dir, fmt.REPORT)
    page = render(data_dir, manifest, parts).encode()
    fmt.write_atomic(path, page)
    return path, len(page), [p.title for p in parts]


def render(data_dir, manifest, parts):
    tokenizer = manifest.tokenizer
    made = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<h1>{html.escape(str(data_dir))}</h1><p>generation {manifest.generation}, "
            f"{html.escape(tokenizer.name)} tokens (vocabulary {tokenizer.vocab_size:,}) as {manifest.dtype}; "
            f"train {manifest.tokens('train'):,} tokens, val {manifest.tokens('val'):,}; written {made}</p>"
            f"<p class=note>options <code>{html.escape(json.dumps(manifest.options))}</code></p>")
    body = "\n".join(render_section(p) for p in parts)
    title = f"gptmill report: {html.escape(str(data_dir))}"
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title><style>{STYLE}</style>"
            f"</head>\n<body>{head}\n{body}\n</body></html>\n")


def render_section(section):
    header = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    rows = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>\n" for row in section.rows)
    table = f"<table><tr>{header}</tr>\n{rows}</table>" if section.rows else ""
    image = f'<img src="{section.image}" alt="{html.escape(section.title)}">' if section.image else ""
    note = f"<p class=note>{html.escape(section.note)}</p>" if section.note else ""
    slug = section.title.lower().replace(" ", "-")
    return f'<section id="{slug}"><h2>{html.escape(section.title)}</h2>{note}{image}{table}</section>'


def cell(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(str(value))}</td>"
    return f"<td class=n>{value:,}</td>" if isinstance(value, int) else f"<td class=n>{value:,.1f}</td>"
