"""Where frames come from: files and image folders (`files`), cameras and streams (`live`).

Each source is an iterable of `pipeline.frames.Frame` with an `info` (`SourceInfo`); one
place decodes (PyAV), and `start_reader` runs a source into the frame loop's queue.
"""
