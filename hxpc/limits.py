"""The documented limits on what hxpc reads: one place for every bound, each reported with its own HX code.

hxpc runs unattended on input that may be careless or hostile, and no input
may crash it or keep it busy for minutes. Files are bounded before they are
parsed (size, characters, nesting), loading bounds the number of values (and
what aliases expand to), and every number of the spec has an upper bound in
its field rules (`fieldtypes.py`), which both validators enforce and the JSON
Schema shows. Work that grows with a product of numbers (replicas x ports, an
environment per overlay, `defaults` under every service) is bounded as a
whole. The README's "Reliability" section lists these figures.
"""

from __future__ import annotations

# -- files (hxpc/compiler/load.py, hxpc/sources.py) ------------------------------------------------------------------
MAX_FILE_BYTES = 8 * 2**20     # ~5x the 5,000-service benchmark spec (1.6 MiB); HX110
MAX_DEPTH = 64                 # nested mappings and sequences; a spec needs about 8; HX112
MAX_VALUES = 1_000_000         # keys and items of one file, aliases expanded (HX109 when aliases did it); HX113
MAX_MERGED_VALUES = 2_000_000  # values of one environment after overlays and `defaults`; HX113
MAX_INT_DIGITS = 30            # the longest integer literal; every count is far below it; HX208
MAX_QUANTITY_CHARS = 64        # the longest duration, size or cpu text (`10s`, `80Gi`, `500m`)
MAX_ENVIRONMENTS = 64          # environments of one spec (inline and overlay files); each is merged whole; HX208

# -- numbers of the spec (hxpc/compiler/fieldtypes.py) ---------------------------------------------------------------
MAX_REPLICAS = 1_000           # of one service or model
MAX_TOTAL_REPLICAS = 20_000    # of a whole environment: each replica is placed, given ports and GPUs; HX315
MAX_GPUS = 256                 # per host, per replica (`resources.gpus`), `tensor_parallel`
MAX_PARAMS_B = 100_000.0       # parameters in billions (100 T)
MAX_MODEL_LEN = 2**31 - 1      # tokens; vLLM and Kubernetes read it as a 32-bit integer
MAX_DURATION_MS = 7 * 86_400_000   # a week: health timings, start periods, scrape intervals
MAX_SIZE_BYTES = 2**63 - 1     # Kubernetes quantities and Docker's limits are signed 64-bit
MAX_MILLICORES = 2**31 - 1     # cpu (Docker's NanoCpus and Kubernetes' millicores fit)
MAX_RETRIES = 1_000            # health-check retries
