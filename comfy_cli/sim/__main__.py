"""python -m comfy_cli.sim [--host H] [--port P] [--output-dir DIR]"""

import argparse

from .server import serve


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m comfy_cli.sim",
                                     description="Run the ComfyUI simulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, output_dir=args.output_dir)


if __name__ == "__main__":
    main()
