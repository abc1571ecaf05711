"""What a run prints, and where the rest goes (`logging.console`).

Every actor's own output (vLLM's and DeepSpeed's lines, loading bars, warnings: all of its stdout and stderr, native
code's too) goes to `<output_dir>/logs/<role>-<index>.log`, rotated by size. The console keeps the progress bar, the
driver's own lines (the start-up and final summaries, evaluations, checkpoints, warnings that concern the user) and
errors, which name the log with the details.
- quiet (default): the actors' output goes only to their logs;
- normal: also to the console, behind Ray's prefix (as before);
- verbose: normal, and the driver's own libraries at INFO.
"""

import logging
import os
import sys
import threading

LOG_FILE, ECHO = "RLHF_LOG_FILE", "RLHF_LOG_ECHO"  # set in each actor's runtime_env by actors/launch.py
MAX_BYTES, BACKUPS = 32 * 1024**2, 2


def actor_environment(output_dir: str, role: str, index: int, mode: str) -> dict[str, str]:
    return {LOG_FILE: os.path.join(output_dir, "logs", f"{role}-{index}.log"), ECHO: "0" if mode == "quiet" else "1"}


def log_path(output_dir: str, role: str, index: int) -> str:
    return actor_environment(output_dir, role, index, "quiet")[LOG_FILE]


def capture_output() -> None:
    """In an actor, first thing: its stdout and stderr (the file descriptors, so native code's output too) into its
    log, and, with echo, on to where they went before (Ray's console stream). A restarted actor appends."""
    path = os.environ.get(LOG_FILE)
    if not path or getattr(capture_output, "done", False):
        return
    capture_output.done = True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    echo = os.dup(1) if os.environ.get(ECHO) == "1" else None
    read, write = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    threading.Thread(target=_copy, args=(read, RotatingFile(path), echo), daemon=True, name="log-capture").start()


class RotatingFile:
    """Appends; past MAX_BYTES the file becomes `.1` (and `.1` `.2`, ...), BACKUPS kept."""

    def __init__(self, path: str):
        self.path, self.file = path, open(path, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        self.file.write(data)
        if self.file.tell() > MAX_BYTES:
            self.file.close()
            for k in range(BACKUPS - 1, 0, -1):
                if os.path.exists(f"{self.path}.{k}"):
                    os.replace(f"{self.path}.{k}", f"{self.path}.{k + 1}")
            os.replace(self.path, f"{self.path}.1")
            self.file = open(self.path, "ab", buffering=0)


def _copy(read: int, log: RotatingFile, echo: int | None) -> None:
    while chunk := os.read(read, 65536):
        log.write(chunk)
        if echo is not None:
            os.write(echo, chunk)


# Libraries' warnings that every local run prints and that ask nothing of the user: logger -> how they begin. They go
# to <output_dir>/logs/driver.log instead of the console. Ray enables token authentication for the instance it starts
# (and says so); DeepSpeed, imported by transformers in the driver, says it found no GPU.
TO_DRIVER_LOG = {
    "ray._private.authentication.authentication_token_setup": "Token authentication is",
    "DeepSpeed": "Setting accelerator to CPU",
}


def configure_driver_logging(mode: str, output_dir: str) -> None:
    """The driver's own loggers (rlhf, actors) at INFO; everything else at WARNING unless verbose; the lines of
    `TO_DRIVER_LOG` into `logs/driver.log`."""
    logging.getLogger().setLevel(logging.INFO if mode == "verbose" else logging.WARNING)
    logging.getLogger("ray").setLevel(logging.INFO if mode == "verbose" else logging.WARNING)  # it has a handler of its own
    for name in ("rlhf", "actors", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)
    driver_log = logging.FileHandler(os.path.join(output_dir, "logs", "driver.log"), delay=True)  # opened if used
    driver_log.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    for name, opening in TO_DRIVER_LOG.items():
        logger = logging.getLogger(name)  # a filter on the logger itself: these loggers have handlers of their own
        for old in [f for f in logger.filters if isinstance(f, ToDriverLog)]:  # an earlier run's, in this process
            logger.removeFilter(old)
            old.handler.close()
        logger.addFilter(ToDriverLog(opening, driver_log))


class ToDriverLog(logging.Filter):
    """Sends a record that begins with `opening` to `handler` (the driver's log) and keeps it off every other."""

    def __init__(self, opening: str, handler: logging.Handler):
        super().__init__()
        self.opening, self.handler = opening, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.opening):
            return True
        os.makedirs(os.path.dirname(self.handler.baseFilename), exist_ok=True)
        self.handler.handle(record)
        return False


def startup_summary(cfg, roles: dict, route: str, precision: str | None = None) -> str:
    """A few lines: model, algorithm, roles and where they run, weight route, steps and what a step holds, and the
    CPU roles' precision where it was chosen by measurement (`precision`, rlhf/precision.py)."""
    step = (f"{cfg.prompts_per_step} prompts x {cfg.algo.group_size} "
            + (f"episodes of at most {cfg.env.max_turns} turns and {cfg.env.max_episode_tokens} tokens"
               if cfg.env.enabled else f"samples of at most {cfg.rollout.max_new_tokens} tokens"))
    where = ", ".join(f"{role} {d.count} x ({d.num_cpus:g} CPU" + (f", {d.num_gpus:g} GPU)" if d.num_gpus else ")")
                      for role, d in roles.items())
    r = cfg.rollout
    mode = r.mode if r.mode != "async" else (f"async (max_staleness {r.max_staleness}, push every {r.push_every}, "
                                             f"partial rollouts {'on' if r.partial_rollouts else 'off'})")
    return "\n".join([
        f"model {cfg.model.source} {cfg.model.path or ''}".rstrip() + f"; algorithm {cfg.algo.name} (loss "
        f"{cfg.algo.loss.name}, estimator {cfg.algo.estimator.name}, correction {cfg.algo.correction.mode})",
        f"roles ({cfg.placement.layout}): {where}; weights through {route}",
        f"{cfg.steps} steps of {step}, rollout {mode}; outputs in {cfg.output_dir} (actors' logs in logs/)",
        *([f"precision: {precision} (train.bf16={cfg.train.bf16}, rollout.dtype={cfg.rollout.dtype})"]
          if precision else [])])


def eval_line(step: int, metrics: dict[str, float], passing) -> str:
    """One evaluation as the console shows it: its figures, and what decides pass@k or that nothing does (a
    `PassRule`, rlhf/passing.py)."""
    figures = ", ".join(f"{key.removeprefix('eval/')} {value:.4g}" for key, value in metrics.items()
                        if key.startswith("eval/"))
    return f"step {step} eval: {figures}; {passing.describe()}"


def finished_table(metrics: dict[str, float], columns: int = 3) -> str:
    """The last step's own metrics (not the per-objective, eval or timing ones: those hold a "/") as a short table,
    `columns` name-value pairs a line, each value a number to 4 significant figures, aligned."""
    shown = [(key, value) for key, value in metrics.items() if "/" not in key]
    width = max((len(key) for key, _ in shown), default=0)
    cells = [f"{key:<{width}} {value:>10.4g}" for key, value in shown]
    rows = ["   ".join(cells[i : i + columns]) for i in range(0, len(cells), columns)]
    return "\n".join(["finished; the last step:", *(f"  {row}" for row in rows)])


def final_summary(history: list[dict], seconds: float, output_dir: str) -> str:
    steps = [h for h in history if "reward" in h]
    if not steps:
        return f"no step taken in {seconds:.0f} s; outputs in {output_dir}"
    per_step = sum(h["time/step"] for h in steps) / len(steps)
    first, last = steps[: min(5, len(steps))], steps[-min(5, len(steps)):]
    mean = lambda rows: sum(h["reward"] for h in rows) / len(rows)  # noqa: E731
    lines = [f"{len(steps)} steps in {seconds / 60:.1f} min ({per_step:.1f} s/step); reward {mean(first):.4g} -> "
             f"{mean(last):.4g} (means of the first and last {len(first)} steps)"]
    lines += filter(None, [eval_progress(history), f"outputs in {output_dir}"])
    return "\n".join(lines)


def eval_progress(history: list[dict]) -> str | None:
    """The held-out figures of the first evaluation and of the last (an RL run's summary, and an SFT run's)."""
    evals = [h for h in history if any(k.startswith("eval/") for k in h)]
    if not evals:
        return None
    keys = [k for k in evals[0] if k.startswith("eval/") and k != "eval/length"]
    return "eval: " + ", ".join(f"{k} {evals[0][k]:.4g} -> {evals[-1][k]:.4g}" for k in keys if k in evals[-1])
