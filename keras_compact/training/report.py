"""`TechniqueReport`: what a technique did to a model, one type for all.

Every technique's `summary(print_fn=None)` prints and returns one. A report
has one row per item the technique looked at (a layer, a weight, a channel
group, a tap, a quantization point), each with a status:

- `"applied"`: the technique acts on it (made sparse, widened, branched,
  quantized, boosted);
- `"kept"`: left as it is on purpose (a dense layer by the paper's rule, a
  group excluded by the user);
- `"skipped"`: the technique could not handle it, with the reason.

Rows carry extra numbers (`values`: density, widths, ranges...), the report
carries model-wide numbers (`totals`) and free-text `notes`.

Example:

```python
report = technique.summary()          # prints the table
[row.item for row in report.applied]  # what was applied
report.totals["sparsity"]             # a model-wide figure
report.to_dict()                      # plain data (JSON-friendly)
```
"""

import dataclasses

STATUSES = ("applied", "kept", "skipped")


@dataclasses.dataclass
class ReportRow:
    """One row of a `TechniqueReport`.

    Attributes:
        item: what the row is about (a layer name, `"layer.weight"`, a
            channel group, a head...).
        status: `"applied"`, `"kept"` or `"skipped"`.
        reason: why it was kept or skipped, or how it was applied ("" if
            there is nothing to say).
        values: extra figures of the row (`{"density": 0.2, ...}`).
    """

    item: str
    status: str
    reason: str = ""
    values: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return {
            "item": self.item,
            "status": self.status,
            "reason": self.reason,
            **self.values,
        }


class TechniqueReport:
    """What a technique did to a model: applied / kept / skipped, and why.

    Args:
        technique: the technique's name (its class name by default).
        title: a one-line headline ("" for none).
    """

    def __init__(self, technique, title=""):
        if not isinstance(technique, str):
            raise TypeError(
                "Expected `technique` to be a string. "
                f"Received: technique={technique!r}"
            )
        self.technique = technique
        self.title = title
        self.rows = []
        self.totals = {}
        self.notes = []

    def add(self, item, status, reason="", **values):
        """Appends a row and returns it.

        Raises:
            ValueError: for a status other than applied / kept / skipped.
        """
        if status not in STATUSES:
            raise ValueError(
                f"Expected `status` to be one of {STATUSES}. "
                f"Received: status={status!r}"
            )
        row = ReportRow(str(item), status, str(reason or ""), dict(values))
        self.rows.append(row)
        return row

    def note(self, text):
        """Appends a free-text line printed after the table."""
        self.notes.append(str(text))

    def _with(self, status):
        return [r for r in self.rows if r.status == status]

    @property
    def applied(self):
        """The rows with status `"applied"`."""
        return self._with("applied")

    @property
    def kept(self):
        """The rows with status `"kept"`."""
        return self._with("kept")

    @property
    def skipped(self):
        """The rows with status `"skipped"`."""
        return self._with("skipped")

    def to_dict(self):
        """The report as plain data: `{"technique", "title", "rows",
        "totals", "notes"}`, each row a dict of item, status, reason and
        its values."""
        return {
            "technique": self.technique,
            "title": self.title,
            "rows": [r.to_dict() for r in self.rows],
            "totals": dict(self.totals),
            "notes": list(self.notes),
        }

    def __str__(self):
        head = self.technique + (f": {self.title}" if self.title else "")
        lines = [head]
        if self.rows:
            width = max(len(r.item) for r in self.rows)
            width = min(max(width, 4), 40)
            for r in self.rows:
                text = f"  {r.status:<8s} {r.item:<{width}s}"
                extra = ", ".join(
                    f"{k}={_format(v)}" for k, v in r.values.items()
                )
                tail = "; ".join(t for t in (r.reason, extra) if t)
                lines.append(f"{text}  {tail}".rstrip())
        for k, v in self.totals.items():
            lines.append(f"  {k}: {_format(v)}")
        lines.extend(self.notes)
        return "\n".join(lines)

    def __repr__(self):
        counts = ", ".join(f"{s}={len(self._with(s))}" for s in STATUSES)
        return f"<TechniqueReport {self.technique}: {counts}>"

    def print(self, print_fn=None):
        """Prints the report line by line with `print_fn` (`print` by
        default), as `keras.Model.summary` does, and returns it."""
        print_fn = print if print_fn is None else print_fn
        for line in str(self).split("\n"):
            print_fn(line)
        return self


def _format(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
