"""Device and precision: what `--device auto` and `--dtype auto` pick, and the matching autocast."""

import contextlib
import ctypes

import torch

# Dense bf16/fp16 tensor-core peaks (FLOP/s) by device name, for MFU; unknown devices report FLOP/s only.
CUDA_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
              "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


class DeviceError(Exception):
    pass


def pick_device(name):
    """cuda, then mps, then cpu for 'auto'; a clear error for a device this machine does not have."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: this torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu "
                          f"or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def cpu_has_native_bf16():
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX) rather than emulating bf16 in fp32, where
    it is slower than fp32. Read from the CPU's flags, so the answer is the same every time on a machine."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: no way to ask without timing, so take the safe choice
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name, device):
    """bf16 where the hardware has it natively, fp16 (with a gradient scaler) on older GPUs, else fp32.
    The choice is recorded in the run's config, so a resume keeps it."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise DeviceError("--dtype fp16 is not supported on CPU; use bf16 or fp32")
        return name
    if device.type == "cuda":
        # is_bf16_supported() also says yes where bf16 is emulated; native bf16 starts with Ampere (8.0).
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    if device.type == "mps":
        return "bf16" if torch.backends.mps.is_macos_or_newer(14, 0) else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device, dtype):
    """Mixed precision for the forward pass on this device type; nothing for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


def compile_pays_off(device):
    """torch.compile speeds up CUDA steps. On CPU it gained nothing once the output layer and its loss were
    computed chunk by chunk (`tiny` and `gpt2` steps within a few percent of eager) and costs 30 s or more
    of compilation per run; MPS support is still partial."""
    return device.type == "cuda"


def keep_freed_memory():
    """Have glibc reuse freed memory instead of handing it back to the system: otherwise every large temporary
    of a CPU step (logits, embedding gradients, casts of the weights) is a fresh mapping, page-faulted in
    anew each step, which cost 15-20% of a `tiny` or `gpt2` step here. A training process reuses the same
    sizes step after step, so it holds its peak, as PyTorch's CUDA allocator does; PyTorch's CPU tuning
    guide gets the same effect from jemalloc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)  # large blocks from the heap too, where freed ones are reused
    libc.mallopt(M_TRIM_THRESHOLD, -1)  # and never trim the heap


def return_freed_memory():
    """glibc's way back (after keep_freed_memory), with blocks of 128 KiB or more mapped on their own and
    returned when freed: a sharded step on CPU gathers each block's weights and frees them after its forward
    and backward, and kept for reuse those blocks held as much as the whole model (bench/sharding_bench.py)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
    libc.mallopt(M_MMAP_MAX, 65536)  # glibc's default
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # fixed: glibc would raise it as mapped blocks are freed
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)


def peak_flops(device, dtype):
    if device.type != "cuda" or dtype == "fp32":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in CUDA_PEAKS.items() if key in name), None)
