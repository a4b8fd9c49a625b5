"""`studio eval --report DIR`: one self-contained HTML file (no script, no network): the metrics table,
charts as inline SVG, the answers side by side with the reference, and the ratings' summary if any.
Built from Evaluation.to_json(), so it holds exactly the numbers `--json` prints. Torch-free."""

from __future__ import annotations

from html import escape
from pathlib import Path

from studio.evaluation.ratings import CRITERIA, Summary
from studio.evaluation.scores import METRICS, format_metric

REPORT_FILE = "eval-report.html"
COLOURS = ("#4c72b0", "#dd8452")  # model A, model B
SHARE_METRICS = (("exact_match", 1.0), ("chrf", 100.0), ("rouge_l", 1.0), ("eos_rate", 1.0), ("distinct_2", 1.0))
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}.answers td{white-space:pre-wrap;width:33%}
.small{color:#666;font-size:.85em}"""


def bar_chart(title: str, rows: list[tuple[str, list[float | None]]], scale: float, labels: list[str]) -> str:
    """Horizontal bars, one group per row, one bar per model; values divided by scale (0–1 fills the width)."""
    bar, gap, left, width = 14, 10, 170, 320
    height = len(rows) * (bar * len(labels) + gap) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{height}" role="img">',
             f'<title>{escape(title)}</title>']
    y = 10
    for name, values in rows:
        parts.append(f'<text x="0" y="{y + bar}" font-size="12">{escape(name)}</text>')
        for model, value in enumerate(values):
            length = 0 if value is None else max(0.0, min(1.0, value / scale)) * width
            parts.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar - 2}" fill="{COLOURS[model % 2]}"/>')
            shown = "–" if value is None else f"{value:.3g}"
            parts.append(f'<text x="{left + length + 4:.1f}" y="{y + bar - 3}" font-size="11">{escape(shown)}</text>')
            y += bar
        y += gap
    for model, label in enumerate(labels):
        parts.append(f'<rect x="{left + 160 * model}" y="{y + 2}" width="10" height="10" fill="{COLOURS[model % 2]}"/>'
                     f'<text x="{left + 160 * model + 14}" y="{y + 11}" font-size="11">{escape(label[:24])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(result: dict, ratings: Summary | None = None) -> str:
    models = result["models"]
    names = [f"{'AB'[i]}: {m['label']}" for i, m in enumerate(models)]
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>SFT Studio evaluation</title>",
           f"<style>{STYLE}</style></head><body>", "<h1>Evaluation</h1>",
           f"<p>{escape(str(result['dataset']))} · {result['prompts']} prompts · sampling "
           f"{escape(', '.join(f'{k}={v}' for k, v in result['sampling'].items()))}</p>"]
    out.append("<h2>Metrics</h2><table id='metrics'><tr><th>metric</th>"
               + "".join(f"<th>{escape(name)}<br><span class='small'>{escape(m['path'])}</span></th>" for name, m in zip(names, models))
               + "</tr>")
    for key, label, _ in METRICS:
        out.append(f"<tr><td>{escape(label)}</td>" + "".join(
            f"<td class='num' data-metric='{key}' data-model='{i}' data-value='{m['metrics'].get(key)}'>"
            f"{escape(format_metric(key, m['metrics'].get(key)))}</td>" for i, m in enumerate(models)) + "</tr>")
    out.append("<tr><td>seconds</td>" + "".join(f"<td class='num'>{m['seconds']:.1f}</td>" for m in models) + "</tr></table>")
    rows = [(label, [m["metrics"].get(key) / scale if m["metrics"].get(key) is not None else None for m in models])
            for key, scale in SHARE_METRICS for name, label, _ in METRICS if name == key]
    out.append(bar_chart("metrics on a 0–1 scale (chrF / 100)", rows, 1.0, names))
    if ratings is not None and ratings.compared + sum(sum(c.values()) for c in ratings.counts.values()):
        out.append(_ratings_html(ratings, names))
    out.append("<h2>Answers</h2><table class='answers'><tr><th>prompt · reference</th>"
               + "".join(f"<th>{escape(name)}</th>" for name in names) + "</tr>")
    for item in result["answers"]:
        reference = "" if item["reference"] is None else f"<hr><span class='small'>reference:</span> {escape(item['reference'])}"
        cells = "".join(f"<td>{escape(a['text'])}<br><span class='small'>{a['stop_reason']} · {a['tokens']} tokens</span></td>"
                        for a in item["answers"])
        out.append(f"<tr><td><span class='small'>{escape(item['source'])}</span><br>{escape(item['prompt'])}{reference}</td>{cells}</tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def _ratings_html(ratings: Summary, names: list[str]) -> str:
    out = ["<h2>Ratings</h2><table id='ratings'><tr><th>criterion</th><th>A mean</th><th>B mean</th><th>ratings A / B</th></tr>"]
    for _, criterion, chapter_name in CRITERIA:
        mean, count = ratings.means[criterion], ratings.counts[criterion]
        cells = "".join(f"<td class='num'>{'–' if mean[m] is None else f'{mean[m]:.2f}'}</td>" for m in "AB")
        out.append(f"<tr><td>{criterion} <span class='small'>({escape(chapter_name)})</span></td>{cells}"
                   f"<td class='num'>{count['A']} / {count['B']}</td></tr>")
    out.append("</table>")
    out.append(f"<p>B against A over {ratings.compared} prompts: win {ratings.rate(ratings.wins):.0%}, "
               f"tie {ratings.rate(ratings.ties):.0%}, loss {ratings.rate(ratings.losses):.0%}</p>")
    rows = [(criterion, [ratings.means[criterion][m] for m in "AB"]) for _, criterion, _ in CRITERIA]
    out.append(bar_chart("mean rating per criterion (1–5)", rows, 5.0, names[:2] if len(names) >= 2 else ["A", "B"]))
    return "\n".join(out)


def write_report(directory: Path, result: dict, ratings: Summary | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    path.write_text(render(result, ratings), encoding="utf-8")
    return path
