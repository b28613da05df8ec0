"""device.py: device and precision choices, without a GPU."""
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
