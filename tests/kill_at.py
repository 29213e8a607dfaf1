"""Run train.py, but SIGKILL this process at a chosen point of a chosen epoch (for the kill-and-resume
test; a real kill: no exception handler, no cleanup runs).

    python tests/kill_at.py POINT EPOCH TRAIN_ARGS...
    POINT: mid-epoch (after the 2nd training step), evaluation (inside the per-epoch PGD-20) or
           checkpoint-write (half of last.pt's bytes written to its temporary file)
"""
import io
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
import train  # noqa: E402

POINT, EPOCH = sys.argv[1], int(sys.argv[2])
state = {"epoch": 0, "steps": 0}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def watch_epoch(real):
    def wrapped(*args, **kwargs):
        state["epoch"], state["steps"] = args[5], 0  # (nets, batches, optimizer, scheduler, args, epoch, ...)
        return real(*args, **kwargs)
    return wrapped


def kill_mid_epoch(real):
    def wrapped(*args, **kwargs):
        state["steps"] += 1
        if state["epoch"] == EPOCH and state["steps"] == 3:
            die()
        return real(*args, **kwargs)
    return wrapped


def kill_in_evaluation(real):
    def wrapped(model, x, *args, **kwargs):
        if state["epoch"] == EPOCH and kwargs.get("loss", "ce") == "ce" and not model.training:
            die()
        return real(model, x, *args, **kwargs)
    return wrapped


def kill_in_checkpoint_write(real_save):
    def wrapped(obj, f, *args, **kwargs):
        if state["epoch"] == EPOCH and hasattr(f, "write") and obj.get("epoch") == EPOCH:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            f.flush()
            die()
        return real_save(obj, f, *args, **kwargs)
    return wrapped


train.train_epoch = watch_epoch(train.train_epoch)
if POINT == "mid-epoch":
    train.training_loss = kill_mid_epoch(train.training_loss)
elif POINT == "evaluation":
    train.pgd = kill_in_evaluation(train.pgd)
elif POINT == "checkpoint-write":
    models.torch.save = kill_in_checkpoint_write(models.torch.save)
else:
    sys.exit(f"unknown point {POINT}")
train.main(sys.argv[3:])
