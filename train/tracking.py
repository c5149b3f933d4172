"""Optional experiment trackers: TensorBoard and Weights & Biases, when asked for and installed.

metrics.jsonl is always written; a tracker receives the same numbers, step by step.
"""

import hashlib
import os


class TrackerError(Exception):
    pass


def summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrackerError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def wandb_module():
    try:
        import wandb
    except ImportError:
        raise TrackerError("--wandb-project needs the wandb package: pip install wandb") from None
    return wandb


def check_trackers(config):
    """Refuse, before the run writes anything, a tracker asked for but not installed."""
    if config.tensorboard:
        summary_writer_class()
    if config.wandb_project:
        wandb_module()


def open_trackers(config, run_dir, record):
    """Functions that take one metrics dict each, for the trackers the config asks for; `record`: the run's
    config.json object, which W&B keeps as the run's config."""
    trackers = []
    if config.tensorboard:
        writer = summary_writer_class()(os.path.join(run_dir, "tensorboard"))

        def to_tensorboard(log):
            for key, value in log.items():
                if key != "step":
                    writer.add_scalar(key, value, log["step"])
            writer.flush()

        trackers.append(to_tensorboard)
    if config.wandb_project:
        wandb = wandb_module()
        # a resume continues the same W&B run
        run_id = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]
        wandb.init(project=config.wandb_project, name=os.path.basename(os.path.normpath(run_dir)), id=run_id,
                   resume="allow", config={k: v for k, v in record.items() if not isinstance(v, dict)}, dir=run_dir)
        trackers.append(lambda log: wandb.log({k: v for k, v in log.items() if k != "step"}, step=log["step"]))
    return trackers
