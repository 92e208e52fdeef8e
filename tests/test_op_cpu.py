"""The compiled CPU kernels against the reference: values, the op's extra outputs, gradients, gradcheck,
torch.library.opcheck, torch.compile, half precision, and the kernels' own argument checks."""
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import make_inputs

import rccl
from rccl import accuracy, reference
from rccl.functional import real_centric_loss, update_hard_banks

pytestmark = pytest.mark.skipif(not rccl.backends()["cpu"], reason="rccl._C was built without the CPU kernels")

OP_ARGS = ("z", "labels", "center", "bank_real", "bank_fake", "lam")
BANK_ARGS = OP_ARGS[:-1]

CASES = {  # name: make_inputs keywords beyond N
    "mixed": dict(),
    "naturals_only": dict(n_fake=0),
    "fakes_only": dict(n_fake=-1),  # -1: all fakes
    "no_banks_no_lam": dict(K=0, M=0),
    "more_lam_than_fakes": dict(M=20, n_fake=3),
    "uneven_banks": dict(K=3, K_fake=0, M=2),
    "ties": dict(duplicates=12),
}


def case_inputs(n, case, dtype=torch.float64, seed=0, **extra):
    kwargs = dict(CASES[case], **extra)
    if kwargs.get("n_fake") == -1:
        kwargs["n_fake"] = n
    if kwargs.get("n_fake") is not None:
        kwargs["n_fake"] = min(kwargs["n_fake"], n)
    return make_inputs(n, D=kwargs.pop("D", 16), dtype=dtype, seed=seed, **kwargs)


def run_both(inputs, neighbors=2, temperature=0.1, margin=0.2):
    """(op outputs, reference outputs, op's z gradient, reference's z gradient)."""
    args = [inputs[name] for name in OP_ARGS]
    z_ref = inputs["z"].detach().clone().requires_grad_()
    ours = torch.ops.rccl.real_centric_loss(*args, neighbors, temperature, margin)
    theirs = reference.real_centric_loss_outputs(z_ref, *args[1:], neighbors, temperature, margin)
    ours[0].backward()
    theirs[0].backward()
    return ours, theirs, inputs["z"].grad, z_ref.grad


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [1, 2, 47, 256])
@pytest.mark.parametrize("neighbors", [2, 1000])  # 1000: more than any class has
def test_matches_reference_float64(n, case, neighbors):
    ours, theirs, grad, grad_ref = run_both(case_inputs(n, case, seed=n), neighbors=neighbors)
    loss, extra, extra_labels, lse = ours
    torch.testing.assert_close(loss, theirs[0].detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(extra, theirs[1], rtol=1e-10, atol=1e-12)
    assert torch.equal(extra_labels, theirs[2])
    torch.testing.assert_close(lse, theirs[3], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [1, 2, 47])
def test_forward_with_grad_and_backward_op_agree(n, case):
    """Autograd on the CPU takes the gradient from _real_centric_loss_with_grad (the forward computes it);
    the plain forward + _real_centric_loss_backward (the path CUDA takes) must give the same outputs and
    gradient, the latter linear in the incoming gradient."""
    inputs = case_inputs(n, case, seed=n + 7, requires_grad=False)
    args = [inputs[name] for name in OP_ARGS]
    *fused, grad_z = torch.ops.rccl._real_centric_loss_with_grad(*args, 2, 0.1, 0.2)
    plain = torch.ops.rccl.real_centric_loss(*args, 2, 0.1, 0.2)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    grad = torch.ops.rccl._real_centric_loss_backward(torch.tensor(2.5, dtype=torch.float64), args[0], args[1],
                                                      plain[1], plain[2], plain[3], 0.1, 0.2)
    torch.testing.assert_close(grad, 2.5 * grad_z, rtol=1e-12, atol=1e-14)


def test_no_gradient_needed_takes_the_plain_forward():
    inputs = case_inputs(20, "mixed", seed=2, requires_grad=False)
    loss = real_centric_loss(**inputs, impl="compiled")
    assert loss.grad_fn is None
    with torch.no_grad():
        z = inputs["z"].clone().requires_grad_()
        assert real_centric_loss(**dict(inputs, z=z), impl="compiled").grad_fn is None


@pytest.mark.parametrize("case", ["mixed", "ties", "more_lam_than_fakes"])
@pytest.mark.parametrize("n", [47, 256])
def test_matches_reference_float32(n, case):
    ours, theirs, grad, grad_ref = run_both(case_inputs(n, case, dtype=torch.float32, seed=n + 1))
    torch.testing.assert_close(ours[0], theirs[0].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-5, atol=1e-6)
    assert torch.equal(ours[2], theirs[2])
    torch.testing.assert_close(ours[3], theirs[3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("temperature, margin", [(0.07, 0.0), (0.5, -0.3), (1.0, 1.0)])
def test_matches_reference_other_hyperparameters(temperature, margin):
    ours, theirs, grad, grad_ref = run_both(case_inputs(33, "mixed", seed=5), 3, temperature, margin)
    torch.testing.assert_close(ours[0], theirs[0].detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_gradient_scales_with_the_incoming_gradient():
    inputs = case_inputs(20, "mixed", seed=3)
    (3.5 * real_centric_loss(**inputs, impl="compiled")).backward()
    z_ref = inputs["z"].detach().clone().requires_grad_()
    (3.5 * real_centric_loss(**dict(inputs, z=z_ref), impl="reference")).backward()
    torch.testing.assert_close(inputs["z"].grad, z_ref.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_fake", [3, 0])
@pytest.mark.parametrize("banks", [0, 2])
def test_gradcheck(n_fake, banks):
    """Finite differences see z through everything, the synthesized rows included, while the spec detaches
    those: so check with rows that do not depend on z (neighbors = 0 makes a positive normalize(h); no
    mixed negatives), which still exercises the extra columns of the backward."""
    inputs = make_inputs(7, D=5, K=banks, M=0, dtype=torch.float64, seed=11, n_fake=n_fake)
    rest = {name: inputs[name] for name in OP_ARGS[1:]}
    fn = lambda z: real_centric_loss(z, **rest, neighbors=0, temperature=0.5, margin=0.2, impl="compiled")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (inputs["z"],))


@pytest.mark.parametrize("n, case", [(9, "mixed"), (1, "mixed"), (6, "naturals_only"), (5, "no_banks_no_lam")])
def test_opcheck_real_centric_loss(n, case):
    inputs = case_inputs(n, case, D=4, dtype=torch.float32)
    args = tuple(inputs[name] for name in OP_ARGS) + (2, 0.1, 0.2)
    torch.library.opcheck(torch.ops.rccl.real_centric_loss.default, args)


def test_opcheck_backward():
    inputs = case_inputs(9, "mixed", D=4, dtype=torch.float32)
    out = torch.ops.rccl.real_centric_loss(*(inputs[name].detach() for name in OP_ARGS), 2, 0.1, 0.2)
    args = (torch.tensor(1.0), inputs["z"].detach(), inputs["labels"], out[1], out[2], out[3], 0.1, 0.2)
    torch.library.opcheck(torch.ops.rccl._real_centric_loss_backward.default, args)


@pytest.mark.parametrize("k_bank, k", [(4, 4), (6, 3), (0, 3)])  # full bank (static shape), filling bank
def test_opcheck_update_hard_banks(k_bank, k):
    inputs = case_inputs(9, "mixed", D=4, K=k_bank, dtype=torch.float32, requires_grad=False)
    args = tuple(inputs[name] for name in BANK_ARGS) + (k,)
    torch.library.opcheck(torch.ops.rccl.update_hard_banks.default, args)


@pytest.mark.parametrize("n, case", [(47, "mixed"), (30, "fakes_only"), (20, "ties"), (12, "no_banks_no_lam")])
@pytest.mark.parametrize("k_bank, k", [(0, 5), (4, 8), (16, 16)])
def test_update_hard_banks_matches_reference(n, case, k_bank, k):
    inputs = case_inputs(n, case, dtype=torch.float64, K=k_bank, seed=n + k, requires_grad=False)
    args = [inputs[name] for name in BANK_ARGS]
    ours = torch.ops.rccl.update_hard_banks(*args, k)
    theirs = reference.update_hard_banks(*args, k)
    for a, b in zip(ours, theirs):
        # the order is not part of the contract, but both keep hardest-first with the same tie-break
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_compile_forward_backward_and_bank_update():
    inputs = case_inputs(24, "mixed", D=8, K=4, M=4, dtype=torch.float32)

    def step(z, labels, center, bank_real, bank_fake, lam):
        loss = real_centric_loss(z, labels, center, bank_real, bank_fake, lam, impl="compiled")
        new_real, new_fake = update_hard_banks(z, labels, center, bank_real, bank_fake, k=4, impl="compiled")
        return loss, new_real, new_fake

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss, new_real, new_fake = compiled(**inputs)
    loss.backward()
    z_ref = inputs["z"].detach().clone().requires_grad_()
    ref_loss, ref_real, ref_fake = step(**dict(inputs, z=z_ref))
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(inputs["z"].grad, z_ref.grad)
    torch.testing.assert_close(new_real, ref_real)
    torch.testing.assert_close(new_fake, ref_fake)


def test_torch_compile_bank_update_while_filling():
    # K < k: the output size depends on the batch (an unbacked size in the fake kernel)
    inputs = case_inputs(20, "mixed", D=8, K=2, requires_grad=False)
    args = {name: inputs[name] for name in BANK_ARGS}
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        fn = torch.compile(lambda **kw: update_hard_banks(**kw, k=6, impl="compiled"), fullgraph=True,
                           backend="aot_eager")
        ours = fn(**args)
    theirs = reference.update_hard_banks(*args.values(), 6)
    assert [t.shape[0] for t in ours] == [min(6, 2 + int((inputs["labels"] == c).sum())) for c in (0, 1)]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RCCL_SLOW_TESTS"), reason="~80 s of inductor compilation on 2 cores: "
                    "set RCCL_SLOW_TESTS=1 (the aot_eager test above covers tracing the op)")
def test_torch_compile_inductor():
    inputs = case_inputs(24, "mixed", D=8, dtype=torch.float32)
    fn = torch.compile(lambda **kw: real_centric_loss(**kw, impl="compiled") * 2.0, fullgraph=True)
    loss = fn(**inputs)
    loss.backward()
    z_ref = inputs["z"].detach().clone().requires_grad_()
    ref = real_centric_loss(**dict(inputs, z=z_ref), impl="reference") * 2.0
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(inputs["z"].grad, z_ref.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [47, 256])
def test_half_precision_error_within_twice_pytorchs(dtype, n):
    """STYLE.md's rule: against a float64 reference on the same (rounded) inputs, our error is at most
    twice that of the reference computed in the low precision itself."""
    inputs = case_inputs(n, "mixed", dtype=dtype, seed=n)
    z = inputs["z"]
    rest = [inputs[name] for name in OP_ARGS[1:]]
    args = (2, 0.1, 0.2)

    def loss_and_grad(features, run):
        features = features.detach().clone().requires_grad_()
        loss = run(features)
        loss.backward()
        return loss.double().detach(), features.grad.double()

    exact = loss_and_grad(z.double(), lambda f: reference.real_centric_loss_outputs(
        f, *(t.double() for t in rest[:1]), *(t.double() for t in rest[1:]), *args)[0])
    ours = loss_and_grad(z, lambda f: torch.ops.rccl.real_centric_loss(
        f, rest[0], *(t.float() for t in rest[1:]), *args)[0])
    low = loss_and_grad(z, lambda f: reference.real_centric_loss_outputs(
        f, rest[0], *rest[1:], *args, compute_dtype=dtype)[0])
    for mine, baseline, truth in zip(ours, low, exact):
        our_error = (mine - truth).abs().max().item()
        pytorch_error = (baseline - truth).abs().max().item()
        assert accuracy.within_low_precision_bound(our_error, pytorch_error), (our_error, pytorch_error)


# The kernels' argument checks are csrc/checks.h's, shared with the CUDA glue (csrc/cuda/ops.cpp): what
# is refused here is refused there with the same message, and what is accepted here is accepted there.
BAD_KERNEL_INPUTS = [
    ("z", lambda a: a.update(z=a["z"][0])),
    ("z", lambda a: a.update(z=a["z"].to(torch.int64))),
    ("z", lambda a: a.update(z=a["z"][:, :0])),
    ("z", lambda a: a["z"].__setitem__((2, 1), float("nan"))),
    ("z", lambda a: a["z"].__setitem__((0, 0), float("inf"))),
    ("labels", lambda a: a.update(labels=a["labels"][1:])),
    ("labels", lambda a: a["labels"].__setitem__(0, 7)),
    ("labels", lambda a: a["labels"].__setitem__(3, -1)),
    ("labels", lambda a: a.update(labels=a["labels"].float())),
    ("labels", lambda a: a.update(labels=a["labels"].int())),
    ("center", lambda a: a.update(center=a["center"][:-1])),
    ("center", lambda a: a.update(center=a["center"][None])),
    ("center", lambda a: a.update(center=a["center"].to(torch.int64))),
    ("bank_real", lambda a: a.update(bank_real=a["bank_real"][:, 1:])),
    ("bank_real", lambda a: a.update(bank_real=a["bank_real"][0])),
    ("bank_fake", lambda a: a.update(bank_fake=a["bank_fake"].to(torch.int32))),
    ("lam", lambda a: a["lam"].__setitem__(0, 1.5)),
    ("lam", lambda a: a["lam"].__setitem__(1, -0.1)),
    ("lam", lambda a: a.update(lam=a["lam"][None])),
    ("lam", lambda a: a.update(lam=a["lam"].to(torch.int64))),
]


@pytest.mark.parametrize("name, spoil", BAD_KERNEL_INPUTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_KERNEL_INPUTS)])
def test_kernel_checks_name_the_argument(name, spoil):
    inputs = case_inputs(8, "mixed", D=5, dtype=torch.float32, requires_grad=False)
    args = {k: v.clone() for k, v in inputs.items()}
    spoil(args)
    with pytest.raises(RuntimeError, match=rf"rccl: {name}:"):
        torch.ops.rccl.real_centric_loss(*(args[k] for k in OP_ARGS), 2, 0.1, 0.2)
    if name != "lam":
        with pytest.raises(RuntimeError, match=rf"rccl: {name}:"):
            torch.ops.rccl.update_hard_banks(*(args[k] for k in BANK_ARGS), 4)


def _backward_args(n=8):
    inputs = case_inputs(n, "mixed", D=5, dtype=torch.float32, requires_grad=False)
    _, extra, extra_labels, lse = torch.ops.rccl.real_centric_loss(*(inputs[k] for k in OP_ARGS), 2, 0.1, 0.2)
    return dict(grad_loss=torch.tensor(1.0), z=inputs["z"], labels=inputs["labels"], extra=extra,
                extra_labels=extra_labels, lse=lse)


BAD_BACKWARD_INPUTS = [
    ("grad_loss", lambda a: a.update(grad_loss=torch.ones(2))),
    ("grad_loss", lambda a: a.update(grad_loss=torch.tensor(1))),
    ("z", lambda a: a.update(z=a["z"].to(torch.int64))),
    ("labels", lambda a: a["labels"].__setitem__(0, 2)),
    ("extra", lambda a: a.update(extra=a["extra"][:, 1:])),
    ("extra", lambda a: a.update(extra=a["extra"].to(torch.int64))),
    ("extra_labels", lambda a: a.update(extra_labels=a["extra_labels"][1:])),
    ("extra_labels", lambda a: a["extra_labels"].__setitem__(0, 3)),
    ("lse", lambda a: a.update(lse=a["lse"][1:])),
]


@pytest.mark.parametrize("name, spoil", BAD_BACKWARD_INPUTS,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_BACKWARD_INPUTS)])
def test_backward_kernel_checks_name_the_argument(name, spoil):
    args = {k: v.clone() for k, v in _backward_args().items()}
    spoil(args)
    with pytest.raises(RuntimeError, match=rf"rccl: {name}:"):
        torch.ops.rccl._real_centric_loss_backward(*args.values(), 0.1, 0.2)


# The rule for centre, banks and lam of another floating dtype than z's accumulation dtype: converted to
# it, on every backend (as rccl.functional does before calling the op).
OTHER_DTYPES = [
    ("center float64", lambda a: a.update(center=a["center"].double())),
    ("bank_real float64", lambda a: a.update(bank_real=a["bank_real"].double())),
    ("bank_fake float16", lambda a: a.update(bank_fake=a["bank_fake"].half())),
    ("lam bfloat16", lambda a: a.update(lam=a["lam"].bfloat16())),
    ("non-contiguous", lambda a: a.update(z=a["z"].t().contiguous().t(), bank_real=a["bank_real"].t().contiguous().t(),
                                          center=torch.stack([a["center"]] * 2, 1)[:, 0])),
]


@pytest.mark.parametrize("change", [c for _, c in OTHER_DTYPES], ids=[name for name, _ in OTHER_DTYPES])
def test_kernels_convert_other_floating_dtypes(change):
    inputs = case_inputs(12, "mixed", D=6, dtype=torch.float32, requires_grad=False)
    args = dict(inputs)
    change(args)
    converted = {k: (v.float().contiguous() if v.is_floating_point() else v) for k, v in args.items()}
    ours = torch.ops.rccl.real_centric_loss(*(args[k] for k in OP_ARGS), 2, 0.1, 0.2)
    expected = torch.ops.rccl.real_centric_loss(*(converted[k] for k in OP_ARGS), 2, 0.1, 0.2)
    for a, b in zip(ours, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    banks = torch.ops.rccl.update_hard_banks(*(args[k] for k in BANK_ARGS), 4)
    for a, b in zip(banks, torch.ops.rccl.update_hard_banks(*(converted[k] for k in BANK_ARGS), 4)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    grad = torch.ops.rccl._real_centric_loss_backward(torch.tensor(1.0, dtype=torch.float64), args["z"],
                                                      args["labels"], ours[1].double(), ours[2], ours[3].half(), 0.1, 0.2)
    grad_expected = torch.ops.rccl._real_centric_loss_backward(torch.tensor(1.0), converted["z"], args["labels"], ours[1],
                                                               ours[2], ours[3].half().float(), 0.1, 0.2)
    torch.testing.assert_close(grad, grad_expected, rtol=0, atol=0)


def test_bfloat16_features_take_float32_or_bfloat16_buffers():
    inputs = case_inputs(10, "mixed", D=6, dtype=torch.bfloat16, requires_grad=False)
    as_float = {k: (v.float() if v.is_floating_point() and k != "z" else v) for k, v in inputs.items()}
    ours = torch.ops.rccl.real_centric_loss(*(inputs[k] for k in OP_ARGS), 2, 0.1, 0.2)
    expected = torch.ops.rccl.real_centric_loss(*(as_float[k] for k in OP_ARGS), 2, 0.1, 0.2)
    assert ours[0].dtype == ours[1].dtype == ours[3].dtype == torch.float32
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cuda_glue_uses_the_shared_checks():
    """The CUDA glue cannot run here; what can be checked without a GPU is that it has no argument checks
    of its own: it calls the three shared entry points of csrc/checks.h, and no other source file
    formulates an argument error."""
    root = Path(__file__).resolve().parents[1] / "csrc"
    glue = (root / "cuda" / "ops.cpp").read_text()
    for entry in ("loss_inputs", "backward_inputs", "bank_inputs"):
        assert f"rccl::checks::{entry}(" in glue
    own_messages = re.compile(r'"rccl: (z|labels|center|bank_real|bank_fake|lam|extra|extra_labels|lse|grad_loss|'
                              r'neighbors|temperature|margin|k): ')
    for source in [root / "cuda" / "ops.cpp", *sorted((root / "cpu").glob("*"))]:
        assert not own_messages.search(source.read_text()), f"{source.name} checks arguments itself"


@pytest.mark.parametrize("option, value", [("neighbors", -1), ("temperature", 0.0), ("margin", float("nan"))])
def test_kernel_checks_name_the_option(option, value):
    inputs = case_inputs(6, "mixed", D=4, dtype=torch.float32, requires_grad=False)
    options = dict(dict(neighbors=2, temperature=0.1, margin=0.2), **{option: value})
    with pytest.raises(RuntimeError, match=rf"rccl: {option}:"):
        torch.ops.rccl.real_centric_loss(*(inputs[k] for k in OP_ARGS), *options.values())


def test_kernel_checks_k():
    inputs = case_inputs(6, "mixed", D=4, dtype=torch.float32, requires_grad=False)
    with pytest.raises(RuntimeError, match="rccl: k:"):
        torch.ops.rccl.update_hard_banks(*(inputs[k] for k in BANK_ARGS), -1)


def test_empty_batch():
    inputs = make_inputs(0, D=4, dtype=torch.float64)
    loss = real_centric_loss(**inputs, impl="compiled")
    assert loss.item() == 0.0
    new_real, new_fake = update_hard_banks(*(inputs[k] for k in BANK_ARGS), k=8, impl="compiled")
    assert new_real.shape == (4, 4) and new_fake.shape == (4, 4)
