#!/usr/bin/env python3
"""Runs a program under a seccomp filter, as a container runtime would (Debian's libseccomp,
through ctypes; no container runtime needed):

  seccomp-exec.py --deny-io-uring PROGRAM ARGS...   io_uring_setup/_enter/_register → EPERM,
                                                   everything else allowed
  seccomp-exec.py --allow-all PROGRAM ARGS...       a filter that allows everything (control)
  seccomp-exec.py --profile FILE PROGRAM ARGS...    a Docker-format profile (JSON): its
                                                   defaultAction and the syscalls it lists, with
                                                   their argument conditions
  seccomp-exec.py --profile FILE --try NAME         under that profile, calls syscall NAME (all
                                                   arguments 0) and prints `NAME errno=N` (0: allowed)

Groups with `includes`/`excludes` (capabilities, architectures, kernel versions) are not
evaluated: the profiles tested here have none.
"""
import ctypes
import errno
import json
import os
import sys

lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]


class ArgCmp(ctypes.Structure):
    """libseccomp's `struct scmp_arg_cmp`."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

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


def rule(ctx, act, name, args=()):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a syscall of this architecture (profiles list every architecture's)
    cmps = (ArgCmp * max(len(args), 1))()
    for i, a in enumerate(args):
        # Docker's format: for MASKED_EQ `value` is the mask and `valueTwo` the datum.
        cmps[i] = ArgCmp(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
    rc = lib.seccomp_rule_add_array(ctx, act, nr, len(args), cmps)
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
            if group.get("includes") or group.get("excludes"):
                raise SystemExit("seccomp-exec: conditional groups (includes/excludes) are not supported")
            act = action(group["action"], group.get("errnoRet"))
            if act == default:
                continue
            for name in group["names"]:
                rule(ctx, act, name, group.get("args") or ())
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
    if rest[0] == "--try":
        nr = lib.seccomp_syscall_resolve_name(rest[1].encode())
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        ret = libc.syscall(ctypes.c_long(nr), *([ctypes.c_long(0)] * 6))
        print(f"{rest[1]} errno={ctypes.get_errno() if ret < 0 else 0}", flush=True)
        return
    os.execv(rest[0], rest)


main()
