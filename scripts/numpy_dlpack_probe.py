"""Which DLPack exports does this machine's numpy accept? (diagnostic)"""
import traceback

import numpy as np

import cudagrad as cg

print("numpy", np.__version__)
for label, make in [("numpy array", lambda: np.ones(3)),
                    ("cudagrad float64", lambda: (cg.tensor(np.ones(3), dtype=cg.float64) + 1).realize()),
                    ("cudagrad float32", lambda: (cg.tensor([1.0, 2.0]) * 2).realize())]:
    try:
        print(label, np.from_dlpack(make()))
    except Exception:
        print(label, "FAILED")
        traceback.print_exc()
