"""Plain-text rendering of recommendations for the terminal."""

from __future__ import annotations

from musrec.recommend import Recommendation

_MAX_LABELS = 60


def render_table(result: Recommendation) -> str:
    q = result.query
    lines = [f"query: {q.source}"]
    if q.video_id is not None and q.start_s is not None and q.end_s is not None:
        lines[0] += f"  ({q.video_id} {q.start_s:g}-{q.end_s:g} s)"
    for i, sound in enumerate(result.inputs, start=1):
        lines.append(f"  {i}. {sound.source}" + (f" ({sound.start_s:g}-{sound.end_s:g} s)" if sound.end_s else ""))
    if q.labels:
        lines.append(f"labels: {', '.join(q.labels)}")
    if result.applied:
        lines.append(f"applied: {'; '.join(result.applied)}")
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
    return "\n".join(lines)
