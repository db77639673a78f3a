from hxpc.main import entrypoint

entrypoint()
