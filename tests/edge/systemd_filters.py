"""Run a command under the seccomp filters systemd 252 installs for two settings of the
edge unit, which a test cannot get from systemd itself (it is not PID 1 here)::

    python -m tests.edge.systemd_filters COMMAND [ARG...]

- ``MemoryDenyWriteExecute=yes``: ``mmap`` asking for write+execute, ``mprotect`` /
  ``pkey_mprotect`` asking for execute, ``shmat`` with ``SHM_EXEC`` fail with EPERM.
- ``RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX``: ``socket()`` of any other family
  fails with EAFNOSUPPORT.

The rules are those of systemd's src/shared/seccomp-util.c (v252), for x86_64 only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from typing import Final

AUDIT_ARCH_X86_64: Final = 0xC000003E
_LD_ABS, _JEQ, _AND, _RET = 0x20, 0x15, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, ALU|AND|K, RET|K
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_MMAP, _MPROTECT, _SHMAT, _SOCKET, _PKEY_MPROTECT = 9, 10, 30, 41, 329  # x86_64 numbers
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 2, 4, 0o100000
_FAMILIES: Final = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def _arg(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` in struct seccomp_data."""
    return 16 + 8 * index


def _program() -> bytes:
    """The BPF program: (code, jump-if-true label, jump-if-false label, k) with labels."""
    ops: list[tuple[int, str | None, str | None, int]] = []
    labels: dict[str, int] = {}

    def op(code: int, k: int = 0, yes: str | None = None, no: str | None = None) -> None:
        ops.append((code, yes, no, k))

    def test_bits(mask: int, deny_errno: str) -> None:
        op(_AND, mask)
        op(_JEQ, mask, deny_errno, "allow")

    op(_LD_ABS, 4)  # seccomp_data.arch
    op(_JEQ, AUDIT_ARCH_X86_64, None, "allow")
    op(_LD_ABS, 0)  # seccomp_data.nr
    op(_JEQ, _MMAP, "mmap")
    op(_JEQ, _MPROTECT, "mprotect")
    op(_JEQ, _PKEY_MPROTECT, "mprotect")
    op(_JEQ, _SHMAT, "shmat")
    op(_JEQ, _SOCKET, "socket")
    op(_RET, _ALLOW)
    labels["mmap"] = len(ops)
    op(_LD_ABS, _arg(2))  # prot
    test_bits(_PROT_WRITE | _PROT_EXEC, "eperm")
    labels["mprotect"] = len(ops)
    op(_LD_ABS, _arg(2))  # prot
    test_bits(_PROT_EXEC, "eperm")
    labels["shmat"] = len(ops)
    op(_LD_ABS, _arg(2))  # shmflg
    test_bits(_SHM_EXEC, "eperm")
    labels["socket"] = len(ops)
    op(_LD_ABS, _arg(0))  # family
    for family in _FAMILIES[:-1]:
        op(_JEQ, family, "allow")
    op(_JEQ, _FAMILIES[-1], "allow", "eafnosupport")
    labels["eperm"] = len(ops)
    op(_RET, _ERRNO | errno.EPERM)
    labels["eafnosupport"] = len(ops)
    op(_RET, _ERRNO | errno.EAFNOSUPPORT)
    labels["allow"] = len(ops)
    op(_RET, _ALLOW)

    def jump(at: int, label: str | None) -> int:
        return 0 if label is None else labels[label] - at - 1

    return b"".join(
        struct.pack("HBBI", code, jump(at, yes), jump(at, no), k)
        for at, (code, yes, no, k) in enumerate(ops)
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Install the filters on this process (and what it executes from now on)."""
    program = _program()
    buffer = ctypes.create_string_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
