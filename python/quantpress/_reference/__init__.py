"""Plain NumPy versions of the Rust kernels: the test oracle, never used for speed.

Each function states the exact float32 arithmetic the kernel performs, so the Rust results
(codes, packed bytes) must match bit for bit and floats exactly. The oracle for the GGUF block
types is the ``gguf`` package itself (``gguf.quants``), which the kernels reproduce byte for byte.
One module per area; everything is re-exported here (``from quantpress import _reference as ref``).
"""

from .calibration import *  # noqa: F401,F403
from .distill import *  # noqa: F401,F403
from .kquants import *  # noqa: F401,F403
from .prune import *  # noqa: F401,F403
from .scalar import *  # noqa: F401,F403
from .search import *  # noqa: F401,F403
from .vq import *  # noqa: F401,F403
