"""``python -m bbcodec``: the command line, as the ``bbcodec`` entry point runs it."""

from .cli import run

if __name__ == "__main__":
    run()
