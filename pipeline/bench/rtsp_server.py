"""A real RTSP test camera (GStreamer's rtsp-server), for `derain bench --live` and the live tests.

Run it with Debian's python3 (it needs python3-gi and gir1.2-gst-rtsp-server-1.0, which the
venv does not have); it imports nothing from this package:

    /usr/bin/python3 pipeline/bench/rtsp_server.py --port 8554 --size 640x360 --fps 25 --mounts cam0,cam1

Each mount serves a moving test pattern as H.264 (zero-latency x264, one keyframe a second), or
Motion JPEG on the --mjpeg-mounts.
It prints "READY rtsp://127.0.0.1:PORT/MOUNT ..." once it listens. With --record-mount it also
accepts a client pushing RTSP (ANNOUNCE/RECORD) there, for restream tests.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def camera_pipeline(width: int, height: int, fps: int, pattern: str, mjpeg: bool = False) -> str:
    encode = ("videoconvert ! video/x-raw,format=I420 ! jpegenc quality=70 ! rtpjpegpay name=pay0 pt=26"
              if mjpeg else  # RTP's JPEG takes 4:2:0; its SDP says no picture size
              f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=800 threads=1 ! "
              "rtph264pay name=pay0 pt=96 config-interval=1")
    return (f"( videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={width},height={height},"
            f"framerate={fps}/1 ! timeoverlay ! {encode} )")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--mounts", default="cam")
    parser.add_argument("--pattern", default="ball")
    parser.add_argument("--record-mount", default="", help="a mount that accepts RTSP RECORD (push)")
    parser.add_argument("--mjpeg-mounts", default="", help="mounts that serve Motion JPEG instead of H.264")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    urls = []
    mjpeg = set(filter(None, args.mjpeg_mounts.split(",")))
    for name in [*filter(None, args.mounts.split(",")), *sorted(mjpeg)]:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(camera_pipeline(width, height, args.fps, args.pattern, name in mjpeg))
        factory.set_shared(True)  # one encoder per mount, however many clients
        mounts.add_factory(f"/{name}", factory)
        urls.append(f"rtsp://{args.host}:{args.port}/{name}")
    if args.record_mount:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        factory.set_launch("( rtph264depay name=depay0 ! fakesink sync=false )")
        mounts.add_factory(f"/{args.record_mount}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("READY " + " ".join(urls), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
