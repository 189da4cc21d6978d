"""What a deployment does, as data: the commands it runs, the SDK requests it makes, the files it writes.

Every cloud target first builds a :class:`Plan`; ``--dry-run`` prints it and stops, a real run carries
it out step by step. One structure for both means the dry run shows exactly what the real run does,
and a test can compare it with an expected structure. Plans hold no timestamps or random names, so
the same bundle and options always print the same plan.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Plan", "Step"]

StepKind = Literal["command", "request", "file", "check"]


@dataclass(frozen=True)
class Step:
    """One thing a deployment does.

    - ``command``: a program run with ``argv`` (docker, kubectl, aws, az)
    - ``request``: an SDK call, ``call`` (e.g. ``sagemaker.create_model``) with keyword ``params``
    - ``file``: a file written (``path``) whose content matters to the user
    - ``check``: a verification the deployment waits on (a waiter, a health check)
    ``when`` says the condition under which the step runs (None: always).
    """

    kind: StepKind
    title: str
    argv: tuple[str, ...] = ()
    call: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    when: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "title": self.title}
        if self.argv:
            doc["argv"] = list(self.argv)
        if self.call is not None:
            doc["call"] = self.call
            doc["params"] = self.params
        if self.path is not None:
            doc["path"] = self.path
        if self.when is not None:
            doc["when"] = self.when
        return doc

    def render(self) -> str:
        """The step as a line a person can read (and, for commands, paste into a shell)."""
        prefix = f"[{self.when}] " if self.when else ""
        if self.argv:
            return f"{prefix}$ {shlex.join(self.argv)}"
        if self.kind in ("request", "check") and self.call is not None:
            args = json.dumps(self.params, sort_keys=True, default=str)
            return f"{prefix}{self.call}(**{args})"
        if self.kind == "file":
            return f"{prefix}write {self.path}"
        return f"{prefix}{self.title}"


@dataclass
class Plan:
    """The steps of one deployment to one target, in order."""

    target: str
    model: str
    version: int
    action: str = "deploy"  # deploy | rollback
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "version": self.version,
            "action": self.action,
            "settings": self.settings,
            "steps": [s.to_dict() for s in self.steps],
            "notes": list(self.notes),
        }

    def render(self) -> list[str]:
        lines = [f"{self.action} {self.model}@{self.version} to {self.target}:"]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"{number:>2}. {step.title}")
            lines.append(f"    {step.render()}")
        lines.extend(f"note: {n}" for n in self.notes)
        return lines
