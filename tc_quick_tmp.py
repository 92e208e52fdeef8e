import torch
from tests.conftest import make_inputs
from tests.cuda_emulation import emulated
lib = emulated.build()
for stm in (1024, 0):
    ops = emulated.EmulatedOps(lib, small_tile_max_n=stm)
    for dtype in (torch.bfloat16, torch.float16):
        for case in [(150, 40, 16, 16, None, 2), (47, 130, 3, 5, None, 2)]:
            N, D, K, M, n_fake, nb = case
            x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, seed=N + D, n_fake=n_fake, requires_grad=False)
            emulated.compare(ops, x, nb)
