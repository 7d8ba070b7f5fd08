"""The one device resolver: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` → a torch device.

torch is imported when a device is resolved, not when this module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atrisk.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Device names the CLI accepts (``cuda:N`` also works from Python).
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``; ``"auto"``/``None`` picks CUDA when there is one.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.

    Returns:
        The device.

    Raises:
        ConfigError: When the name is unknown, CUDA is asked for but not available, or
            ``cuda:N`` names a device this machine does not have.
    """
    import torch

    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use --device cpu or --device auto"
            )
        if ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ConfigError(
                    f"device {name!r} does not exist: this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s)"
                )
        return torch.device(name)
    raise ConfigError(f"unknown device {device!r}; choose one of: auto, cpu, cuda, cuda:N")
