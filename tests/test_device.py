"""device.py: device and precision choices, without a GPU."""
import pytest
import torch

from colourbatch import device


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
    with pytest.raises(device.DeviceError, match="unknown device"):
        device.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(device.DeviceError, match="no CUDA device"):
            device.pick_device("cuda")
        assert device.pick_device("auto").type == "cpu"
