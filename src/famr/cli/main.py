"""Run the command line: parse, dispatch to one handler, turn errors into exit codes.

Exit codes: 0 done, 1 a run that diverged (nothing written), 2 bad input (nothing written), 3 a
refused result (`forget`) or a run that is not certified (`certify`), 4 `verify` found a
mismatch, 130 interrupted by SIGINT or SIGTERM (nothing written: outputs are committed together,
only once complete).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from .. import distributed, io
from ..api import resolve_device
from ..loop import DivergenceError
from . import common
from .attack import cmd_attack
from .certify import cmd_certify
from .common import _INTERRUPT, _interrupt
from .demo import cmd_demo
from .forget import cmd_forget
from .importing import cmd_import
from .listing import cmd_methods, cmd_metrics
from .parser import build_parser
from .sweep import cmd_sweep_lambda
from .train import cmd_train
from .verify import cmd_verify

HANDLERS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "forget": cmd_forget,
    "verify": cmd_verify,
    "import": cmd_import,
    "certify": cmd_certify,
    "sweep-lambda": cmd_sweep_lambda,
    "attack": cmd_attack,
    "methods": cmd_methods,
    "metrics": cmd_metrics,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting."""
    # torch.func's Hessian-vector products import a torch module that still calls the
    # deprecated torch.jit.script: a warning about torch's own code, not the user's command
    warnings.filterwarnings(
        "ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning
    )
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    previous = {}
    _INTERRUPT.clear()
    io.forget_committed()
    common.EXIT_WHEN_WRITTEN[0] = 0
    if threading.current_thread() is threading.main_thread():
        # SIGTERM takes the same clean path as Ctrl-C: temporary files removed, nothing written
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _interrupt)
    started_group = False
    try:
        started_group = _start_process_group(args)
        with contextlib.ExitStack() as stack:
            if not distributed.is_main():  # under torchrun only rank 0 prints and writes
                stack.enter_context(
                    contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w")))
                )
                if hasattr(args, "quiet"):
                    args.quiet = True
            return HANDLERS[args.command](args)
    except (ValueError, OSError) as err:  # FileNotFoundError, FileExistsError, PermissionError, ...
        message = " ".join(str(err).split())
        print(f"famr: error: {message}", file=sys.stderr)
        return 2
    except DivergenceError as err:
        print(f"famr: run diverged, nothing written: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        written = io.committed_outputs()
        if written:  # held back while the outputs were placed, delivered right after
            print(
                "famr: interrupted after the run finished; its outputs were written whole: "
                + ", ".join(map(str, written)),
                file=sys.stderr,
            )
            return common.EXIT_WHEN_WRITTEN[0]
        print(
            "famr: interrupted; nothing written (outputs are only ever written whole, at the "
            "end of a run)",
            file=sys.stderr,
        )
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if started_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _start_process_group(args: argparse.Namespace) -> bool:
    """Join the process group when run under torchrun (which sets ``WORLD_SIZE``, 1 for one
    process): NCCL with one GPU per process when CUDA is used, gloo on CPUs. Returns whether a
    group was started."""
    if int(os.environ.get("WORLD_SIZE", "0")) < 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    device = resolve_device(getattr(args, "device", None))
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
        dist.init_process_group("nccl", device_id=torch.device(f"cuda:{local}"))
    else:
        dist.init_process_group("gloo")
    return True
