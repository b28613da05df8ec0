"""device.py: device and precision choices, threads, and memory handed back before a fork; without a GPU."""
import ctypes
import os
import sys

import pytest
import torch

from colourbatch import device
from colourbatch.errors import ColourbatchError


def test_cpu_choices():
    cpu = device.pick_device("cpu")
    assert cpu.type == "cpu"
    assert device.resolve_precision(cpu, "fp32") == torch.float32
    assert device.resolve_precision(cpu, "bf16") == torch.bfloat16
    auto = device.resolve_precision(cpu, "auto")
    assert auto == (torch.bfloat16 if device.cpu_bf16_ok() else torch.float32)
    with pytest.raises(device.DeviceError, match="fp16 autocast is for CUDA"):
        device.resolve_precision(cpu, "fp16")
    assert not device.grad_scaler(cpu, torch.bfloat16).is_enabled()


def test_bad_requests():
    with pytest.raises(device.DeviceError, match="unknown device") as err:
        device.pick_device("tpu")
    assert isinstance(err.value, ColourbatchError) and err.value.exit_code == 2
    with pytest.raises(device.DeviceError, match="unknown precision 'fp8' .use auto, fp32, bf16, fp16"):
        device.resolve_precision(torch.device("cpu"), "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(device.DeviceError, match="no CUDA device"):
            device.pick_device("cuda")
        assert device.pick_device("auto").type == "cpu"


def test_threads_follow_omp_num_threads_when_set(monkeypatch):
    import torch

    from colourbatch.device import cpu_count, set_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as Ray sets it for a one-CPU worker
        assert set_cpu_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_cpu_threads() == cpu_count()
        assert set_cpu_threads(1) == 1
    finally:
        torch.set_num_threads(before)


CPUINFO_HEAD = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n"


@pytest.mark.parametrize("flags, native", [
    ("fpu sse avx2 avx512f avx512_vnni", False),   # emulated bf16 (oneDNN says yes anyway)
    ("fpu avx2 avx512f avx512_bf16", True),       # Cooper Lake, Zen 4
    ("fpu avx512f amx_bf16 amx_tile", True),      # Sapphire Rapids
])
def test_auto_picks_bf16_only_where_the_cpu_has_it_natively(tmp_path, monkeypatch, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO_HEAD + f"flags\t\t: {flags}\nbogomips\t: 4000\n\n"
                    + CPUINFO_HEAD.replace(": 0", ": 1") + f"flags\t\t: {flags}\n")
    monkeypatch.setattr(device, "CPUINFO", str(info))
    cpu = torch.device("cpu")
    assert device.cpu_bf16_ok() is native
    assert device.resolve_precision(cpu, "auto") == (torch.bfloat16 if native else torch.float32)
    assert device.resolve_precision(cpu, "bf16") == torch.bfloat16  # asked for: given, native or not
    assert device.resolve_precision(cpu, "fp32") == torch.float32


def test_auto_is_fp32_where_the_cpu_flags_cannot_be_read(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "CPUINFO", str(tmp_path / "absent"))  # macOS, Windows
    assert device.cpu_flags() is None and not device.cpu_bf16_ok()
    assert device.resolve_precision(torch.device("cpu"), "auto") == torch.float32


def _with_trained_statistics(net):
    """`net` in eval mode with batch-norm statistics and affines unlike a fresh network's: means
    off zero, variances 0.05 to 4. (Not the near-dead channels of trained weights, gains up to
    90: fifty such random layers in a row amplify any rounding into noise.)"""
    gen = torch.Generator().manual_seed(3)
    for bn in net.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            bn.running_var.copy_(0.05 + torch.rand(n, generator=gen) * 4)
            bn.weight.data.copy_(0.2 + torch.rand(n, generator=gen) * 0.3)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)
    return net.eval()


@pytest.mark.parametrize("name", ["default", "page"])
def test_inference_form_colours_as_the_network_does(name):
    from colourbatch.model import build_model, model_input, predict_ab8, predict_layer8

    torch.manual_seed(0)
    net = _with_trained_statistics(build_model(name))
    fast = device.prepare_model(net, torch.device("cpu"))
    assert isinstance(fast, device.InferenceForm) and fast.runtime == "fused"  # x86 torch has oneDNN
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    # Every convolution is one oneDNN call, those a clamp followed with it as their post-op.
    clamps = sum(isinstance(m, (torch.nn.ReLU6, torch.nn.ReLU)) for m in net.modules())
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    fused = [m for m in fast.fast.modules() if isinstance(m, device.FusedConv)]
    assert not any(isinstance(m, torch.nn.Conv2d) for m in fast.fast.modules())
    assert len(fused) == convs and sum(m.post[0] != "none" for m in fused) == clamps > 0
    assert fast.cfg == net.cfg and torch.equal(fast.bins, net.bins)
    for batch, size in ((3, 224), (2, 96)):  # traced on one 224 tile: any batch, any size
        l8 = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8)
        with torch.inference_mode():
            want, got = net(model_input(l8)), fast(model_input(l8))
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 1e-4 * want.abs().max()
            ab_want, ab_got = predict_ab8(net, l8), predict_ab8(fast, l8)
            assert (ab_want.int() - ab_got.int()).abs().max() <= 1  # a rounding edge at most
            assert (ab_want != ab_got).float().mean() < 1e-3
            if name == "page":
                assert (predict_layer8(net, l8).int() - predict_layer8(fast, l8).int()).abs().max() <= 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(model_input(l8)).dtype == torch.bfloat16  # bf16 asked for: the eager folded net


@pytest.mark.parametrize("act", [torch.nn.ReLU6, torch.nn.ReLU])
def test_a_fused_convolution_clamps_as_its_activation_did(act):
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.BatchNorm2d(16), act(),
                                 torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16), act())
    net = _with_trained_statistics(layers)
    with torch.no_grad():
        layers[3].weight.mul_(10)  # the second layer's output past 6 too
    fused = device.fuse_convolutions(device.fold_batchnorm(net))
    assert [type(m) for m in fused] == [device.FusedConv, torch.nn.Identity, torch.nn.Identity,
                                        device.FusedConv, torch.nn.Identity]
    x = (torch.randn(2, 8, 20, 20) * 100).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = net(x), fused(x)
    top = (want == 6).float().mean() if act is torch.nn.ReLU6 else (want > 6).float().mean()
    assert (want == 0).float().mean() > 0.05 and top > 0.05  # both ends of the clamp reached
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_a_convolution_no_clamp_follows_is_one_onednn_call_too():
    # MobileNetV2's linear 1x1 projections and the heads: torch's own path for them is im2col
    # and a GEMM; as a FusedConv with no post-op they take oneDNN's kernel, the same numbers.
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(8, 24, 1), torch.nn.BatchNorm2d(24))
            self.head = torch.nn.Conv2d(24, 10, 1)

        def forward(self, x):
            return self.head(self.body(x))

    net = _with_trained_statistics(Net())
    fused = device.fuse_convolutions(device.fold_batchnorm(net))
    assert isinstance(fused.body[0], device.FusedConv) and isinstance(fused.head, device.FusedConv)
    assert fused.body[0].post == fused.head.post == ("none", [])
    x = torch.randn(2, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = net(x), fused(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_without_the_fused_call_the_graph_is_frozen(monkeypatch):
    from colourbatch.model import build_model, model_input

    net = _with_trained_statistics(build_model("default"))

    def missing(self, x):  # a torch built without oneDNN's fused convolution
        raise RuntimeError("No such operator mkldnn::_convolution_pointwise")
    monkeypatch.setattr(device.FusedConv, "forward", missing)
    fast = device.prepare_model(net, torch.device("cpu"))
    assert fast.runtime == "frozen" and isinstance(fast.fast, torch.jit.ScriptModule)
    l8 = torch.randint(0, 256, (2, 1, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        want = net(model_input(l8))
        assert (fast(model_input(l8)) - want).abs().max() <= 1e-4 * want.abs().max()


def test_a_model_in_training_stays_trainable():
    from colourbatch.model import build_model

    net = build_model("default")  # training mode, as train builds it
    prepared = device.prepare_model(net, torch.device("cpu"))
    assert prepared is net and any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())


def test_lanes_beside_an_encoder_take_every_core_only_on_one_intra_op_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "cpu_count", lambda: 2)
    assert device.lanes_beside_encoder(1) == 2  # the 2-core machine video runs on: a lane a core
    monkeypatch.setattr(device, "cpu_count", lambda: 3)
    assert device.lanes_beside_encoder(1) == 3
    monkeypatch.setattr(device, "cpu_count", lambda: 16)
    assert device.lanes_beside_encoder(8) == 1  # several intra-op threads: OpenMP has the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # Ray's share for a worker: no more threads than that
    assert device.lanes_beside_encoder(1) == 1


def test_threads_beside_an_encoder_leave_it_half_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, want in ((1, 1), (2, 1), (16, 8)):
        monkeypatch.setattr(device, "cpu_count", lambda cores=cores: cores)
        assert device.threads_beside_encoder() == want
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # told: as told
    assert device.threads_beside_encoder() == 3


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "malloc_trim")),
                    reason="glibc's malloc_trim")
def test_free_heap_memory_is_handed_back_to_the_kernel():
    # 200 MiB in blocks below malloc's mmap threshold live on its heap; a block allocated after
    # them pins the heap's top, so freeing them leaves free pages inside the heap, which malloc
    # keeps (and a forked worker would share copy-on-write) until they are handed back.
    blocks = [bytearray(b"x" * (64 * 1024)) for _ in range(3200)]
    pin = bytearray(b"y" * (64 * 1024))
    held = _rss_mib()
    del blocks
    kept = _rss_mib()
    assert device.return_free_memory()
    after = _rss_mib()
    if held - kept >= 50:
        pytest.skip("this allocator returns freed heap memory by itself")
    assert kept - after > 150
    assert pin[0] == ord("y")
