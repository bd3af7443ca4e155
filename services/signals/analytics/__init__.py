"""Pure analytics of the signals service: features, walk-forward model, signals,
backtest, run diff, charts and the run report. No I/O: callers pass frames in and
get frames, dicts, Markdown or SVG bytes back."""
