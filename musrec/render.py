"""Plain-text rendering of recommendations for the terminal."""

from __future__ import annotations

from musrec.recommend.results import Query, Recommendation
from musrec.timecode import format_timecode
from musrec.videos.status import clean_text

_MAX_LABELS = 60
_CHOSEN = {"loudest": " (the loudest)", "start": " (from --start)"}  # Query.extra["window"] of a file


def render_table(result: Recommendation) -> str:
    q = result.query
    lines = [f"query: {q.source}{_where(q)}"]
    for i, sound in enumerate(result.inputs, start=1):
        lines.append(f"  {i}. {sound.source}{_where(sound)}")
    if q.labels:
        lines.append(f"labels: {', '.join(q.labels)}")
    if result.applied:
        lines.append(f"applied: {'; '.join(result.applied)}")
    if result.ranked_by:
        lines.append(f"ranked by: {result.ranked_by}")
    if not result.matches:
        lines.append("no matches")
        return "\n".join(lines)
    lines.append("")
    each = "  " + "  ".join(f"{'to ' + str(i):>6}" for i in range(1, len(result.inputs) + 1)) if result.inputs else ""
    header = f"{'#':>2}  {'score':>6}{each}  {'segment':<13}  {'link':<46}  labels"
    lines.append(header)
    for rank, m in enumerate(result.matches, start=1):
        labels = ", ".join(m.labels)
        if len(labels) > _MAX_LABELS:
            labels = labels[: _MAX_LABELS - 3] + "..."
        segment = f"{m.start_s:g}-{m.end_s:g} s"
        close = "  " + "  ".join(f"{s:>6.3f}" for s in m.similarities) if m.similarities else ""
        lines.append(f"{rank:>2}  {m.score:>6.3f}{close}  {segment:<13}  {m.url:<46}  {labels}")
        if m.video is not None and m.video.title:  # its name, on a line of its own (already one line of plain text)
            lines.append(f"{'':>10}{clean_text(' · '.join(filter(None, (m.video.title, m.video.channel))))}")
    return "\n".join(lines)


def _where(q: Query) -> str:
    """Which part of a sound was used: a file's window and how it was chosen, a video's segment or window."""
    if q.start_s is None or q.end_s is None:
        return ""
    if q.kind == "file":
        how = _CHOSEN.get(str(q.extra.get("window")), "")
        return f"  window {format_timecode(q.start_s)}-{format_timecode(q.end_s)}{how}"
    return f"  ({q.video_id + ' ' if q.video_id else ''}{q.start_s:g}-{q.end_s:g} s)"
