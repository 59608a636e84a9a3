"""Where derained frames go: video files and image folders (`files`: the one encoder),
live restreams, recorded segments and snapshots (`streams`), and the browser preview with
/metrics (`preview`). Each sink has write(FrameBatch) and close(ok)."""
