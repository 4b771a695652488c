"""The Foxglove layout shipped as docs/foxglove-layout.json, built with the SDK's layout types.

Like the built-in viewer: what the agent sees and hears on top, what it imagines
beside it, which clusters fire below (state transitions and a plot of the
cluster ids), and the hub's rate and latency. Write it again with
`python -m tools.foxglove_layout docs/foxglove-layout.json`; a test checks that
the shipped file is what this prints and that every topic it names is one the
views make (`replay.foxglove_views`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from foxglove.layouts import (ImageConfig, ImageModeConfig, ImagePanel, Layout, PlotConfig, PlotPanel, PlotSeries,
                              RawMessagesConfig, RawMessagesPanel, SplitContainer, SplitItem, StateTransitionsConfig,
                              StateTransitionsPanel, StateTransitionsSeries)

SENSES = ("visual", "audio")
COLOURS = {"visual": "#4e98e2", "audio": "#f5774d"}


def _image(title: str, topic: str) -> SplitItem:
    return SplitItem(content=ImagePanel(title=title, config=ImageConfig(
        image_mode=ImageModeConfig(image_topic=topic, image_schema_name="foxglove.RawImage"))))


def _row(*items: SplitItem, direction: str = "row") -> SplitContainer:
    return SplitContainer(direction=direction, items=list(items))


def layout() -> Layout:
    sees = _row(_image("sees (camera)", "/visual/camera"), _image("sees (stimulus)", "/visual/stimulus"),
                _image("hears (spectrogram)", "/audio/stimulus"))
    imagines = _row(_image("imagines: image recalled", "/visual/imagined"),
                    _image("imagines: sound recalled", "/audio/imagined"))
    fires = StateTransitionsPanel(title="fires (cluster per stimulus)", config=StateTransitionsConfig(paths=[
        StateTransitionsSeries(value=f"/{m}/fires.cluster_id", label=f"{m} cluster", timestamp_method="receiveTime")
        for m in SENSES]))
    ids = PlotPanel(title="fires: cluster ids over time", config=PlotConfig(show_legend=True, paths=[
        PlotSeries(value=f"/{m}/fires.cluster_id", label=m, color=COLOURS[m], show_line=False,
                   timestamp_method="receiveTime") for m in SENSES]))
    stats = PlotPanel(title="stats: hub rate (/s) and capture-to-recall p99 (ms)", config=PlotConfig(
        show_legend=True, paths=[PlotSeries(value="/stats/hub.rate_per_s", label="rate /s", timestamp_method="receiveTime"),
                                 PlotSeries(value="/stats/hub.latency_p99_ms", label="p99 ms",
                                            timestamp_method="receiveTime")]))
    recalls = RawMessagesPanel(title="recalls", config=RawMessagesConfig(topic_path="/audio/recalls"))
    top = _row(SplitItem(proportion=3, content=sees), SplitItem(proportion=2, content=imagines))
    bottom = _row(SplitItem(proportion=2, content=fires), SplitItem(proportion=2, content=ids),
                  SplitItem(content=stats), SplitItem(content=recalls))
    return Layout(content=_row(SplitItem(content=top), SplitItem(content=bottom), direction="column"))


def layout_json() -> str:
    return json.dumps(json.loads(layout().to_json()), indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tools.foxglove_layout OUT.json", file=sys.stderr)
        return 2
    Path(args[0]).write_text(layout_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
