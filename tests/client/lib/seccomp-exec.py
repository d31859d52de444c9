#!/usr/bin/env python3
"""Runs a program under a seccomp filter, as a container runtime would (Debian's libseccomp,
through ctypes; no container runtime needed):

  seccomp-exec.py --deny-io-uring PROGRAM ARGS...   io_uring_setup/_enter/_register → EPERM,
                                                   everything else allowed
  seccomp-exec.py --allow-all PROGRAM ARGS...       a filter that allows everything (control)
  seccomp-exec.py --profile FILE PROGRAM ARGS...    a Docker-format profile (JSON): its
                                                   defaultAction and the syscalls it lists
"""
import ctypes
import errno
import json
import os
import sys

lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000
LOG = 0x7FFC0000


def errno_action(code):
    return 0x00050000 | (code & 0xFFFF)


def action(name, errno_ret=None):
    """A Docker profile's action name as libseccomp's value."""
    if name == "SCMP_ACT_ALLOW":
        return ALLOW
    if name == "SCMP_ACT_ERRNO":
        return errno_action(errno_ret if errno_ret is not None else errno.EPERM)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return 0x00000000
    if name == "SCMP_ACT_KILL_PROCESS":
        return KILL_PROCESS
    if name == "SCMP_ACT_LOG":
        return LOG
    raise SystemExit(f"seccomp-exec: unsupported action {name}")


def rule(ctx, act, name):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a syscall of this architecture (profiles list every architecture's)
    rc = lib.seccomp_rule_add(ctx, act, nr, 0)
    if rc != 0 and rc != -errno.EEXIST:
        raise SystemExit(f"seccomp-exec: cannot add a rule for {name}: {rc}")


def main():
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "--profile":
        profile = json.load(open(rest[0]))
        rest = rest[1:]
        default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
        ctx = lib.seccomp_init(default)
        for group in profile.get("syscalls", []):
            if group.get("args"):
                continue  # argument filters: not needed by the profiles tested here
            act = action(group["action"], group.get("errnoRet"))
            if act == default:
                continue
            for name in group["names"]:
                rule(ctx, act, name)
    elif mode == "--deny-io-uring":
        ctx = lib.seccomp_init(ALLOW)
        for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
            rule(ctx, errno_action(errno.EPERM), name)
    elif mode == "--allow-all":
        ctx = lib.seccomp_init(ALLOW)
    else:
        raise SystemExit(f"seccomp-exec: unknown mode {mode}")
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp-exec: seccomp_load failed")
    os.execv(rest[0], rest)


main()
