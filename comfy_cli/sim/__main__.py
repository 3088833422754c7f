"""python -m comfy_cli.sim [--host H] [--port P] [--output-dir DIR] [--replay FILE [--speed X]]"""

import argparse
import sys

PROG = "python -m comfy_cli.sim"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description="Run the ComfyUI simulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--replay", metavar="FILE", default=None,
                        help="answer every prompt with this recording of a real run (real_sd15 format)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="X",
                        help="with --replay: multiply the recorded gaps by X (0.1: ten times faster)")
    args = parser.parse_args(argv)
    try:
        from .server import serve
    except ImportError as exc:
        # As `comfy-cli sim` says it: one line, exit 2 (the simulator is an optional extra).
        sys.stderr.write(f"{PROG}: error: the simulator needs aiohttp ({exc}); "
                         "install with: pip install 'comfy-run-cli[sim]'\n")
        return 2
    script = None
    if args.replay:
        from .replay import Script

        try:
            script = Script.load(args.replay, args.speed)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"{PROG}: error: --replay {args.replay}: {exc}\n")
            return 2
    serve(host=args.host, port=args.port, output_dir=args.output_dir, script=script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
