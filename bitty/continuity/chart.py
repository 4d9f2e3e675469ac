"""Rendering a ``bitty audit`` report: a text table and a self-contained HTML page, one SVG
chart per symbol with a labelled time axis, and the time not covered and every gap (however
short) marked; a PNG too when matplotlib is installed."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from bitty.continuity.audit import Line, Report

GAP_COLORS = {"open": "#f0ad4e", "closed": "#5cb85c", "unrecoverable": "#d9534f"}
UNCOVERED_COLORS = {"not running": "#d6d6d6", "disconnected": "#ecd9f7"}


def table(report: Report) -> str:
    head = ("exchange", "symbol", "trades", "gaps open", "closed", "unrecoverable", "connected", "complete", "collectors")
    rows = [head] + [(x.exchange, x.symbol, str(x.trades), str(x.gaps_open), str(x.gaps_closed),
                      str(x.gaps_unrecoverable), f"{x.connected:.1%}", f"{x.complete:.1%}",
                      " ".join(f"{name} {share:.0%}" for name, share in x.collectors.items()) or "-")
                     for x in report.lines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = [f"window {report.since:%Y-%m-%d %H:%M:%S} .. {report.until:%Y-%m-%d %H:%M:%S} UTC"]
    out += ["  ".join(c.ljust(w) if i < 2 or i == 8 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
    for name in sorted(set(report.duplicates) | set(report.quarantined)):
        out.append(f"{name}: {report.duplicates.get(name, 0)} duplicates ignored, "
                   f"{report.quarantined.get(name, 0)} frames quarantined")
    return "\n".join(out)


_STEPS = [timedelta(seconds=s) for s in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                                         86400, 172800, 604800)]


def ticks(since: datetime, until: datetime, most: int = 10) -> list[tuple[datetime, str]]:
    """Round times for a time axis, at most ``most`` of them, each with its label (the date
    with the first tick and wherever the day changes)."""
    span = until - since
    step = next((s for s in _STEPS if span / s <= most), _STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + step * -(-(since - epoch) // step)  # the first multiple of step at or after since
    out: list[tuple[datetime, str]] = []
    day = None
    moment = first
    while moment <= until:
        fmt = "%H:%M:%S" if step < timedelta(minutes=1) else "%H:%M"
        label = moment.strftime(fmt) if moment.date() == day else moment.strftime(f"%Y-%m-%d {fmt}")
        day = moment.date()
        out.append((moment, label))
        moment += step
    return out


def svg(report: Report, line: Line, width: int = 960, height: int = 170) -> str:
    """Trades per minute as bars over a labelled time axis; time not covered shaded; every gap a
    band of at least 3 px with a marker above it (colour by status)."""
    left, right, top_pad, plot_h = 56, 12, 18, height
    plot_w = width - left - right
    span = max((report.until - report.since).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        return left + max(0.0, min(plot_w, (moment - report.since).total_seconds() / span * plot_w))

    top = max(line.per_minute.values(), default=0)
    scale = max(top, 1)
    base = top_pad + plot_h
    unit = "hour" if report.bucket >= timedelta(hours=1) else "minute"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + 40}" font-family="sans-serif" '
             f'role="img" aria-label="{html.escape(line.exchange)} {html.escape(line.symbol)} trades per {unit}">',
             f'<rect x="{left}" y="{top_pad}" width="{plot_w}" height="{plot_h}" fill="#fcfcfc" stroke="#bbb"/>']
    for moment, label in ticks(report.since, report.until):
        at = x(moment)
        anchor = "start" if at - left < 40 else "end" if left + plot_w - at < 40 else "middle"
        parts.append(f'<line x1="{at:.1f}" y1="{top_pad}" x2="{at:.1f}" y2="{base + 4}" stroke="#e2e2e2"/>'
                     f'<text x="{at:.1f}" y="{base + 16}" font-size="11" text-anchor="{anchor}" fill="#444">'
                     f"{label}</text>")
    bar = max(plot_w * report.bucket.total_seconds() / span - 0.3, 1.0)
    for minute, count in sorted(line.per_minute.items()):
        h = count / scale * (plot_h - 6)
        parts.append(f'<rect x="{x(minute):.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="#3366cc"><title>{minute:%Y-%m-%d %H:%M} UTC: {count} trades</title></rect>')
    for a, b, why in line.uncovered:  # over the bars: trades stored while not covered came from backfill
        parts.append(f'<rect class="uncovered" x="{x(a):.1f}" y="{top_pad}" width="{max(x(b) - x(a), 1.0):.1f}" '
                     f'height="{plot_h}" fill="{UNCOVERED_COLORS[why]}" opacity="0.75"><title>{why}: '
                     f'{a:%Y-%m-%d %H:%M:%S} .. {b:%H:%M:%S} UTC</title></rect>')
    for gap in line.gaps:
        start, end = x(max(gap.from_time, report.since)), x(gap.to_time or report.until)
        colour = GAP_COLORS.get(gap.status, "#999")
        tip = html.escape(f"{gap.cause} gap {gap.status}: {gap.from_time:%Y-%m-%d %H:%M:%S} .. "
                          f"{gap.to_time:%H:%M:%S} UTC" if gap.to_time else f"{gap.cause} gap {gap.status}: from "
                          f"{gap.from_time:%Y-%m-%d %H:%M:%S} UTC") + html.escape(f" ({gap.reason})" if gap.reason else "")
        middle = (start + max(end, start + 3)) / 2
        parts.append(f'<g class="gap" data-status="{gap.status}"><title>{tip}</title>'
                     f'<rect x="{min(start, middle - 1.5):.1f}" y="{top_pad}" width="{max(end - start, 3.0):.1f}" '
                     f'height="{plot_h}" '
                     f'fill="{colour}" opacity="0.55"/>'
                     f'<path d="M{middle - 5:.1f},{top_pad - 10} L{middle + 5:.1f},{top_pad - 10} L{middle:.1f},{top_pad - 1} Z" '
                     f'fill="{colour}"/></g>')
    parts.append(f'<text x="{left - 6}" y="{top_pad + 10}" font-size="11" text-anchor="end" fill="#444">{top}</text>'
                 f'<text x="{left - 6}" y="{base}" font-size="11" text-anchor="end" fill="#444">0</text>'
                 f'<text x="12" y="{top_pad + plot_h / 2:.0f}" font-size="11" fill="#444" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top_pad + plot_h / 2:.0f})">trades/{unit}</text>'
                 f'<text x="{left + plot_w / 2:.0f}" y="{base + 32}" font-size="11" text-anchor="middle" fill="#444">'
                 "time (UTC)</text>"
                 "</svg>")
    return "".join(parts)


def page(report: Report) -> str:
    """A self-contained HTML report: the table and one chart per symbol, no external assets."""
    swatch = '<span style="display:inline-block;width:12px;height:12px;background:{};margin:0 4px 0 12px"></span>{}'
    legend = "".join([swatch.format("#3366cc", "trades"),
                      *(swatch.format(c, s) for s, c in UNCOVERED_COLORS.items()),
                      *(swatch.format(c, f"{s} gap (marked &#9660;)") for s, c in GAP_COLORS.items())])
    charts = "".join(
        f'<section class="symbol"><h2>{html.escape(x.exchange)} {html.escape(x.symbol)}</h2>'
        f'<p class="facts">{x.trades} trades, connected {x.connected:.1%}, complete {x.complete:.1%}, '
        f"gaps: {x.gaps_open} open, {x.gaps_closed} closed, {x.gaps_unrecoverable} unrecoverable</p>"
        f"{svg(report, x)}</section>" for x in report.lines)
    empty = "" if report.lines else "<p>No trades, coverage or gaps in this window.</p>"
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bitty audit</title><style>'
            "body{font-family:system-ui,sans-serif;margin:20px 28px;color:#222}h1{font-size:22px;margin:0 0 4px}"
            "h2{font-size:16px;margin:18px 0 2px}.facts{margin:0 0 4px;color:#555}pre{background:#f6f6f6;padding:8px}"
            "</style></head><body>"
            f"<h1>bitty audit</h1><p>{report.since:%Y-%m-%d %H:%M:%S} .. {report.until:%Y-%m-%d %H:%M:%S} UTC</p>"
            f"<pre>{html.escape(table(report))}</pre><p>{legend}</p>{empty}{charts}</body></html>")


def png(report: Report, path: str) -> bool:
    """Write the charts as a PNG if matplotlib is installed; False if it is not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(max(len(report.lines), 1), 1, figsize=(11, 2.4 * max(len(report.lines), 1)), squeeze=False)
    for ax, x in zip(axes[:, 0], report.lines, strict=False):
        for a, b, why in x.uncovered:
            ax.axvspan(a, b, color=UNCOVERED_COLORS[why], alpha=0.8, lw=0)
        minutes = sorted(x.per_minute)
        ax.bar(minutes, [x.per_minute[m] for m in minutes], width=report.bucket, align="edge", color="#3366cc")
        for gap in x.gaps:
            colour = GAP_COLORS.get(gap.status, "#999")
            ax.axvspan(gap.from_time, gap.to_time or report.until, color=colour, alpha=0.55)
            ax.axvline(gap.from_time, color=colour, lw=1.5)  # a gap of any length stays visible
        ax.set_xlim(report.since, report.until)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax.set_ylabel("trades/" + ("hour" if report.bucket >= timedelta(hours=1) else "minute"))
        ax.set_title(f"{x.exchange} {x.symbol}: connected {x.connected:.1%}, complete {x.complete:.1%}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
