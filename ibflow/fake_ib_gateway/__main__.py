"""`python -m ibflow.fake_ib_gateway`: the fake gateway without the ibflow CLI."""

import argparse
import asyncio
import contextlib
import logging

from .cli import add_arguments, serve

parser = argparse.ArgumentParser(prog="python -m ibflow.fake_ib_gateway", description=__doc__)
add_arguments(parser)
arguments = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(serve(arguments))
