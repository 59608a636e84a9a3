"""Measurements behind `derain bench` and `derain eval-detect`: speed of the model and the
pipeline (`speed`), live delay (`live`), flat memory (`memory`), detection on derained
frames (`detection`), and the GStreamer RTSP test cameras they run against (`cameras`)."""
