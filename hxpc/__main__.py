from hxpc.cli import entrypoint

entrypoint()
